//! One keep-alive HTTP/1.1 connection over TLS: the Redfish load clients and the webhook
//! admission measurement.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::ServerName;

use super::BenchError;

/// A response read whole.
#[derive(Debug)]
pub struct Response {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Connection {
    pub async fn connect(
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Connection, BenchError> {
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::Http(format!("connect {addr}: {e}")))?;
        tcp.set_nodelay(true)
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let name = ServerName::from(addr.ip());
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| BenchError::Tls(format!("handshake with {addr}: {e}")))?;
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(|e| BenchError::Http(e.to_string()))?;
        tokio::spawn(connection);
        Ok(Connection {
            sender,
            authority: addr.to_string(),
        })
    }

    /// Sends one request and reads the whole response body.
    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, BenchError> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, &self.authority);
        if !body.is_empty() {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| BenchError::Http(e.to_string()))?;
        // The previous response may still be finishing on the connection task.
        self.sender
            .ready()
            .await
            .map_err(|e| BenchError::Http(format!("connection closed: {e}")))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| BenchError::Http(format!("reading the body: {e}")))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// One authenticated GET on a connection of its own, which must succeed: a server has
/// served (TLS set up, handlers warm) before its idle memory is read.
pub async fn warm_up(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    path: &str,
    user: &str,
    password: &str,
) -> Result<(), BenchError> {
    let mut connection = Connection::connect(addr, tls).await?;
    let auth = basic_auth(user, password);
    let response = connection
        .send(
            http::Method::GET,
            path,
            &[("authorization", &auth)],
            Bytes::new(),
        )
        .await?;
    if !response.status.is_success() {
        return Err(BenchError::Http(format!(
            "warm-up GET {path} on {addr}: {}",
            response.status
        )));
    }
    Ok(())
}

/// `Authorization: Basic ...` for a user and password.
pub fn basic_auth(user: &str, password: &str) -> String {
    use base64::Engine;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}
