//! A file server on loopback over HTTPS, for the fetch tests: a CA of its own (handed to the
//! client as a mirror's caFile), Range requests, 404s, and, on request, a response that breaks
//! off halfway (the server sends the full Content-Length, then only half the body, and closes).

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls;

#[derive(Default)]
struct State {
    files: HashMap<String, Vec<u8>>,
    /// Paths whose next full (non-Range) response stops after half the body.
    break_next: Vec<String>,
    /// Every request: (path, Range header).
    log: Vec<(String, Option<String>)>,
}

pub struct FileServer {
    pub addr: SocketAddr,
    pub ca_pem: String,
    state: Arc<Mutex<State>>,
    _thread: std::thread::JoinHandle<()>,
}

impl FileServer {
    pub fn start() -> FileServer {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "test mirror CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca_params, ca_key);
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let state: Arc<Mutex<State>> = Default::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let Ok((tcp, _)) = listener.accept().await else {
                        continue;
                    };
                    let (acceptor, st) = (acceptor.clone(), st.clone());
                    tokio::spawn(async move {
                        if let Ok(tls) = acceptor.accept(tcp).await {
                            let _ = serve(tls, st).await;
                        }
                    });
                }
            });
        });
        FileServer {
            addr,
            ca_pem,
            state,
            _thread: thread,
        }
    }

    pub fn base_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub fn put(&self, path: &str, data: Vec<u8>) {
        self.state.lock().unwrap().files.insert(path.into(), data);
    }

    pub fn break_next(&self, path: &str) {
        self.state.lock().unwrap().break_next.push(path.into());
    }

    pub fn requests(&self) -> Vec<(String, Option<String>)> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, &self.ca_pem).unwrap();
    }
}

async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    state: Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.lines();
    let path = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string();
    let range = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("range"))
        .map(|(_, v)| v.trim().to_string());
    let (data, cut) = {
        let mut st = state.lock().unwrap();
        st.log.push((path.clone(), range.clone()));
        let data = st.files.get(&path).cloned();
        let cut = range.is_none() && st.break_next.contains(&path);
        if cut {
            st.break_next.retain(|p| p != &path);
        }
        (data, cut)
    };
    let Some(data) = data else {
        let body = b"not found\n";
        s.write_all(
            format!(
                "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await?;
        s.write_all(body).await?;
        return s.shutdown().await;
    };
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.strip_suffix('-'))
        .and_then(|n| n.parse::<usize>().ok());
    match start {
        Some(n) if n >= data.len() => {
            s.write_all(
                format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    data.len()
                )
                .as_bytes(),
            )
            .await?;
        }
        Some(n) => {
            s.write_all(
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {n}-{}/{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len() - 1,
                    data.len(),
                    data.len() - n
                )
                .as_bytes(),
            )
            .await?;
            s.write_all(&data[n..]).await?;
        }
        None => {
            s.write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
                    data.len()
                )
                .as_bytes(),
            )
            .await?;
            if cut {
                s.write_all(&data[..data.len() / 2]).await?;
                s.flush().await?;
                // drop the connection without a TLS close_notify: a broken transfer
                return Ok(());
            }
            s.write_all(&data).await?;
        }
    }
    s.shutdown().await
}
