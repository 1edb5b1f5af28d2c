//! Active probes from this process: a plain-HTTP `HEAD` (the walkthrough sends plaintext and
//! lets the waypoint originate TLS) to a host, its response headers classified. HTTP/1.1 over
//! a TCP connection, written out here: a probe needs the status line and headers, nothing
//! more, and must tell a refused connection from a timeout.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::{Classified, parse_blocks};

/// How a host is probed.
#[derive(Debug, Clone)]
pub struct HttpProbe {
    pub path: String,
    /// For connecting, and for each read and write.
    pub timeout: Duration,
    pub proxy_servers: Vec<String>,
}

/// The most response header bytes read.
const MAX_HEAD: usize = 64 * 1024;

/// `host`, or `host:port` (80 by default).
fn authority(target: &str) -> (String, String) {
    match target.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() && !host.contains(':') => {
            (host.to_owned(), target.to_owned())
        }
        _ => (target.to_owned(), format!("{target}:80")),
    }
}

impl HttpProbe {
    /// Sends `HEAD http://target/path` and classifies the answer; a failure is an `error`
    /// verdict saying what failed.
    pub fn probe(&self, target: &str) -> Classified {
        let started = Instant::now();
        match self.exchange(target) {
            Ok(head) => {
                let latency = started.elapsed().as_secs_f64() * 1000.0;
                let mut blocks = parse_blocks(&head, &self.proxy_servers);
                let mut answer = if blocks.is_empty() {
                    Classified::failed(
                        target,
                        "the connection closed before any response".to_owned(),
                    )
                } else {
                    blocks.swap_remove(0)
                };
                answer.target = target.to_owned();
                answer.latency_ms = Some(latency);
                answer
            }
            Err(e) => Classified::failed(target, e.to_string()),
        }
    }

    /// The response's status line and headers as text.
    fn exchange(&self, target: &str) -> io::Result<String> {
        let (host, address) = authority(target);
        let resolved = address.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"))
        })?;
        let mut stream = TcpStream::connect_timeout(&resolved, self.timeout)?;
        stream.set_read_timeout(Some(self.timeout))?;
        stream.set_write_timeout(Some(self.timeout))?;
        let request = format!(
            "HEAD {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: egresslens-probe/{}\r\nAccept: */*\r\n\
             Connection: close\r\n\r\n",
            self.path,
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(request.as_bytes())?;
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(String::from_utf8_lossy(&head).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Verdict;

    #[test]
    fn targets_take_port_80_unless_they_name_one() {
        assert_eq!(authority("aliyun.com"), ("aliyun.com".into(), "aliyun.com:80".into()));
        assert_eq!(authority("127.0.0.1:8080"), ("127.0.0.1".into(), "127.0.0.1:8080".into()));
    }

    #[test]
    fn a_refused_connection_is_an_error_verdict() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let probe = HttpProbe {
            path: "/".into(),
            timeout: Duration::from_secs(2),
            proxy_servers: Vec::new(),
        };
        let answer = probe.probe(&address);
        assert_eq!(answer.verdict, Verdict::Error);
        assert!(answer.error.unwrap().contains("refused"));
    }
}
