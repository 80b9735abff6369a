//! A tiny HTTP server for boot images, standing for Ironic's image cache: paths ending in
//! `.iso` answer 200 with a small body (HEAD: the headers only, with its Content-Length),
//! anything else 404. Two kinds of misbehaving servers for the BMC's size check:
//! `*.stream.iso` answers without a Content-Length (generated content), and `*.gone.iso`
//! answers HEAD but its GET is a 404 (removed between insert and import).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Size of every image served.
pub const IMAGE_BYTES: usize = 64 << 10;

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
                    let head_only = line.starts_with("HEAD ");
                    let path = line.split(' ').nth(1).unwrap_or_default();
                    // A removed image still answers HEAD (a stale cache in front of it).
                    let gone = path.ends_with(".gone.iso") && !head_only;
                    let found = path.ends_with(".iso") && !gone;
                    let answer = if found {
                        let body = vec![0u8; IMAGE_BYTES];
                        let length = if path.ends_with(".stream.iso") {
                            String::new()
                        } else {
                            format!("Content-Length: {}\r\n", body.len())
                        };
                        let mut head = format!(
                            // Last-Modified: Ironic's image cache checks it before it
                            // reuses a copy (`ironic/drivers/modules/image_cache.py`).
                            "HTTP/1.1 200 OK\r\n{length}\
                             Last-Modified: Tue, 01 Dec 2026 00:00:00 GMT\r\nConnection: close\r\n\r\n",
                        )
                        .into_bytes();
                        if !head_only {
                            head.extend_from_slice(&body);
                        }
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
