//! A lean load generator for the throughput tables: every request is encoded before the clock
//! starts, and replies are only scanned (their kind, an integer), so on this small machine the
//! client takes as little CPU from the server as it can and the ratios show the server's cost.

use std::io::{Read, Write};
use std::net::TcpStream;

/// What one reply was, as far as the checks need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// An array of two: a grant's `[token, fence]`.
    Grant,
    Int(i64),
    Okay,
    Nil,
    Other,
}

impl Reply {
    pub fn is_grant(&self) -> bool {
        *self == Reply::Grant
    }
    pub fn is_one(&self) -> bool {
        *self == Reply::Int(1)
    }
    pub fn is_okay(&self) -> bool {
        *self == Reply::Okay
    }
    pub fn is_nil(&self) -> bool {
        *self == Reply::Nil
    }
}

/// A connection that sends prepared bytes and scans the replies.
pub struct Driver {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes in `buf` from `at` on are unread.
    at: usize,
    end: usize,
}

impl Driver {
    pub fn connect(port: u16) -> Self {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        Driver {
            stream,
            buf: vec![0; 1 << 20],
            at: 0,
            end: 0,
        }
    }

    /// Send `request` (holding `count` commands) and check each of the `count` replies with
    /// `ok`: how many failed it.
    pub fn exchange(&mut self, request: &[u8], count: usize, ok: fn(&Reply) -> bool) -> usize {
        self.stream.write_all(request).unwrap();
        (0..count).filter(|_| !ok(&self.reply())).count()
    }

    fn reply(&mut self) -> Reply {
        loop {
            if let Some((reply, len)) = scan(&self.buf[self.at..self.end]) {
                self.at += len;
                return reply;
            }
            if self.at == self.end {
                self.at = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                self.buf.copy_within(self.at..self.end, 0);
                self.end -= self.at;
                self.at = 0;
            }
            let n = self.stream.read(&mut self.buf[self.end..]).unwrap();
            assert!(n > 0, "the server closed the connection");
            self.end += n;
        }
    }
}

/// The first complete reply in `buf` and its length.
fn scan(buf: &[u8]) -> Option<(Reply, usize)> {
    let line = buf.windows(2).position(|w| w == b"\r\n")?;
    let head = &buf[1..line];
    let number = || std::str::from_utf8(head).ok()?.parse::<i64>().ok();
    let after = line + 2;
    match buf.first()? {
        b':' => Some((number().map_or(Reply::Other, Reply::Int), after)),
        b'+' => Some((
            if head == b"OK" {
                Reply::Okay
            } else {
                Reply::Other
            },
            after,
        )),
        b'-' => Some((Reply::Other, after)),
        b'_' => Some((Reply::Nil, after)),
        b'$' => match number()? {
            -1 => Some((Reply::Nil, after)),
            n => {
                let end = after + usize::try_from(n).ok()? + 2;
                (buf.len() >= end).then_some((Reply::Other, end))
            }
        },
        b'*' => match number()? {
            -1 => Some((Reply::Nil, after)),
            n => {
                let mut at = after;
                for _ in 0..n {
                    let (_, len) = scan(&buf[at..])?;
                    at += len;
                }
                Some((if n == 2 { Reply::Grant } else { Reply::Other }, at))
            }
        },
        _ => Some((Reply::Other, after)),
    }
}
