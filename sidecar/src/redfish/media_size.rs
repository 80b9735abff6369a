//! The size of a virtual-media image, asked of its server with a HEAD request before the
//! insert is accepted: the import (a CDI DataVolume) must be sized to hold it, and a 4 GiB
//! guess failed for DVD-sized installers. The request goes through the egress guard like
//! event deliveries (names resolved by [`super::egress::GuardedResolver`], every URL checked
//! with [`super::egress::check_now`] first, redirects included).
//!
//! CDI's importer learns the size the same way and streams a raw image straight to the volume
//! only from a server that answers HEAD; otherwise it marks the source `brokenForQemuImg` and
//! falls back to scratch space of the same size (containerized-data-importer
//! pkg/importer/http-datasource.go `createHTTPReader`, doc/scratch-space.md: "misbehaving
//! servers (not supporting HEAD requests)"). A server that gives no size is therefore refused
//! here with a Redfish error that says so, rather than imported into a guessed size.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use kubevirt_bmc_contract::egress::{EgressPolicy, redact};

use super::events::HttpClient;

/// Longer than any image server needs to answer a HEAD; short enough for a Redfish client.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Redirects followed, as Go's http client (which CDI's importer uses) follows up to 10.
pub const MAX_REDIRECTS: usize = 5;

/// What one HEAD answer says (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Size(u64),
    Redirect(String),
    Unknown(String),
}

/// Reads a HEAD answer: 2xx with a `Content-Length` is the size; a 3xx with `Location` is
/// followed; anything else says why the size is unknown.
pub fn read_answer(status: u16, content_length: Option<&str>, location: Option<&str>) -> Answer {
    match status {
        200..=299 => match content_length.map(str::trim).map(str::parse::<u64>) {
            Some(Ok(0)) => Answer::Unknown("the image server announced an empty image".into()),
            Some(Ok(size)) => Answer::Size(size),
            Some(Err(_)) => {
                Answer::Unknown("the image server sent an invalid Content-Length".into())
            }
            None => Answer::Unknown(
                "the image server answered HEAD without a Content-Length (chunked or \
                 generated content); serve the image as a static file"
                    .into(),
            ),
        },
        301 | 302 | 303 | 307 | 308 => match location {
            Some(location) => Answer::Redirect(location.to_owned()),
            None => Answer::Unknown(format!(
                "the image server answered {status} without a Location"
            )),
        },
        405 | 501 => Answer::Unknown(format!(
            "the image server does not answer HEAD requests ({status}); CDI needs the size too"
        )),
        _ => Answer::Unknown(format!("the image server answered HEAD with {status}")),
    }
}

/// Resolves a `Location` against the URL it came from (absolute, or absolute-path).
fn resolve(base: &str, location: &str) -> Option<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Some(location.to_owned());
    }
    if !location.starts_with('/') {
        return None;
    }
    let scheme_end = base.find("://")? + 3;
    let host_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Some(format!("{}{location}", &base[..host_end]))
}

/// The image's size in bytes, or why it cannot be known (a message for the client, with the
/// URL shown redacted).
pub async fn probe(policy: &Arc<EgressPolicy>, image: &str) -> Result<u64, String> {
    // One client per insert: inserts are rare, and it keeps no connection to the image
    // server open afterwards.
    let client: HttpClient = super::events::http_client(policy.clone());
    let mut url = image.to_owned();
    for _ in 0..=MAX_REDIRECTS {
        super::egress::check_now(policy, &url)
            .await
            .map_err(|error| error.to_string())?;
        let request = http::Request::head(&url)
            .body(Full::new(Bytes::new()))
            .map_err(|_| format!("{} is not a valid URL", redact(&url)))?;
        let response = tokio::time::timeout(TIMEOUT, client.request(request))
            .await
            .map_err(|_| {
                format!(
                    "the image server at {} did not answer within {TIMEOUT:?}",
                    redact(&url)
                )
            })?
            .map_err(|e| {
                format!(
                    "cannot reach {}: {}",
                    redact(&url),
                    super::events::with_causes(&e)
                )
            })?;
        let header = |name: http::header::HeaderName| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        match read_answer(
            response.status().as_u16(),
            header(http::header::CONTENT_LENGTH).as_deref(),
            header(http::header::LOCATION).as_deref(),
        ) {
            Answer::Size(size) => return Ok(size),
            Answer::Unknown(why) => return Err(why),
            Answer::Redirect(location) => {
                url = resolve(&url, &location).ok_or_else(|| {
                    "the image server redirected to a relative Location".to_owned()
                })?;
            }
        }
    }
    Err(format!(
        "the image server redirected more than {MAX_REDIRECTS} times"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_size_comes_only_from_a_successful_answer_with_content_length() {
        assert_eq!(
            read_answer(200, Some("10737418240"), None),
            Answer::Size(10 << 30)
        );
        assert!(
            matches!(read_answer(200, None, None), Answer::Unknown(w) if w.contains("Content-Length"))
        );
        assert!(matches!(
            read_answer(200, Some("0"), None),
            Answer::Unknown(_)
        ));
        assert!(matches!(
            read_answer(200, Some("x"), None),
            Answer::Unknown(_)
        ));
        assert!(
            matches!(read_answer(405, Some("9"), None), Answer::Unknown(w) if w.contains("HEAD"))
        );
        assert!(matches!(read_answer(404, None, None), Answer::Unknown(w) if w.contains("404")));
        assert_eq!(
            read_answer(302, None, Some("/a/b.iso")),
            Answer::Redirect("/a/b.iso".into())
        );
    }

    #[test]
    fn redirects_resolve_against_the_host() {
        assert_eq!(
            resolve("http://h:8080/x/y.iso", "/z.iso").as_deref(),
            Some("http://h:8080/z.iso")
        );
        assert_eq!(
            resolve("http://h/x", "https://mirror/z.iso").as_deref(),
            Some("https://mirror/z.iso")
        );
        assert_eq!(resolve("http://h/x", "z.iso"), None);
    }
}
