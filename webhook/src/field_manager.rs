//! Our field manager on every write the controller's client sends, including the ones kube
//! builds itself (kube-runtime's event `Recorder` creates and patches Events with default
//! parameters): kube-apiserver otherwise records such writes in managedFields as a manager
//! derived from the User-Agent, and `kubectl` users cannot tell who changed a field.

use http::{Method, Request, Uri};
use tower::util::MapRequestLayer;

use crate::names;

/// The request's URI with `fieldManager=<ours>` added to a POST, PUT or PATCH that names none.
pub fn with_field_manager(method: &Method, uri: &Uri) -> Option<Uri> {
    if !matches!(*method, Method::POST | Method::PUT | Method::PATCH) {
        return None;
    }
    let path_and_query = uri.path_and_query()?;
    let query = path_and_query.query().unwrap_or("");
    if query.split('&').any(|p| p.starts_with("fieldManager=")) {
        return None;
    }
    let joined = if query.is_empty() {
        format!(
            "{}?fieldManager={}",
            path_and_query.path(),
            names::FIELD_MANAGER
        )
    } else {
        format!(
            "{}?{query}&fieldManager={}",
            path_and_query.path(),
            names::FIELD_MANAGER
        )
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(joined.parse().ok()?);
    Uri::from_parts(parts).ok()
}

fn name_manager<B>(mut request: Request<B>) -> Request<B> {
    if let Some(uri) = with_field_manager(request.method(), request.uri()) {
        *request.uri_mut() = uri;
    }
    request
}

/// The tower layer for `kube::client::ClientBuilder::with_layer`.
pub fn layer<B>() -> MapRequestLayer<fn(Request<B>) -> Request<B>> {
    MapRequestLayer::new(name_manager::<B> as fn(Request<B>) -> Request<B>)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_without_a_manager_get_ours_and_others_are_left_alone() {
        let uri: Uri = "/apis/events.k8s.io/v1/namespaces/ns/events?"
            .parse()
            .unwrap();
        let named = with_field_manager(&Method::POST, &uri).unwrap();
        assert_eq!(
            named.to_string(),
            "/apis/events.k8s.io/v1/namespaces/ns/events?fieldManager=kubevirt-bmc-controller"
        );
        let uri: Uri = "http://h/api/v1/namespaces/ns/secrets/s?pretty=1"
            .parse()
            .unwrap();
        let named = with_field_manager(&Method::PATCH, &uri).unwrap();
        assert_eq!(
            named.to_string(),
            "http://h/api/v1/namespaces/ns/secrets/s?pretty=1&fieldManager=kubevirt-bmc-controller"
        );
        let own: Uri = "/api/v1/x?fieldManager=other&force=true".parse().unwrap();
        assert!(with_field_manager(&Method::PATCH, &own).is_none());
        assert!(with_field_manager(&Method::GET, &"/api/v1/pods".parse().unwrap()).is_none());
        assert!(with_field_manager(&Method::DELETE, &"/api/v1/x".parse().unwrap()).is_none());
    }
}
