//! A tiny HTTP server for boot images, standing for Ironic's image cache: paths ending in
//! `.iso` answer 200 with a small body, anything else 404.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct ImageServer {
    addr: SocketAddr,
    task: tokio::task::AbortHandle,
}

impl ImageServer {
    pub async fn start() -> std::io::Result<ImageServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let line = String::from_utf8_lossy(&request);
                    let path = line.split(' ').nth(1).unwrap_or_default();
                    let answer = if path.ends_with(".iso") {
                        let body = vec![0u8; 64 << 10];
                        let mut head = format!(
                            // Last-Modified: Ironic's image cache checks it before it
                            // reuses a copy (`ironic/drivers/modules/image_cache.py`).
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\
                             Last-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        head.extend_from_slice(&body);
                        head
                    } else {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    };
                    let _ = stream.write_all(&answer).await;
                });
            }
        })
        .abort_handle();
        Ok(ImageServer { addr, task })
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
