//! Where chat reads its lines from and writes its lines to. Plain streams
//! here; the terminal's line editor in `terminal`.

use std::io::Write;

use tokio::io::AsyncBufRead;

use crate::client::ClientError;

/// Where chat reads command lines from.
pub(super) trait Input {
    /// The next line; `None` at the end of the input. Cancel-safe: chat
    /// drops it whenever something else happens first.
    async fn next_line(&mut self) -> std::io::Result<Option<String>>;

    /// The phone numbers to complete (only a line editor completes).
    fn set_contacts(&mut self, _phones: Vec<String>) {}
}

/// Where chat writes: answers and messages with `out`, warnings and errors
/// with `err`, a line at a time. The first failed write is kept and ends the
/// session at the next `check`.
pub(super) trait Screen {
    fn out(&mut self, line: &str);
    fn err(&mut self, line: &str);
    /// The first write that failed, if any.
    fn check(&mut self) -> Result<(), ClientError>;
}

/// Lines from a plain stream.
pub(super) struct Lines<R>(pub tokio::io::Lines<R>);

impl<R: AsyncBufRead + Unpin> Input for Lines<R> {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        self.0.next_line().await
    }
}

/// Two plain streams: answers and messages, warnings and errors.
pub(super) struct Plain<O, E> {
    out: O,
    err: E,
    broken: Option<std::io::Error>,
}

impl<O: Write, E: Write> Plain<O, E> {
    pub fn new(out: O, err: E) -> Self {
        Self {
            out,
            err,
            broken: None,
        }
    }
}

impl<O: Write, E: Write> Screen for Plain<O, E> {
    fn out(&mut self, line: &str) {
        let written = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        keep_first(&mut self.broken, written);
    }

    fn err(&mut self, line: &str) {
        let written = writeln!(self.err, "{line}").and_then(|()| self.err.flush());
        keep_first(&mut self.broken, written);
    }

    fn check(&mut self) -> Result<(), ClientError> {
        broken_terminal(&mut self.broken)
    }
}

/// Keeps the first failed write.
pub(super) fn keep_first(broken: &mut Option<std::io::Error>, written: std::io::Result<()>) {
    if let Err(e) = written {
        broken.get_or_insert(e);
    }
}

/// The kept failure, as the error that ends the session.
pub(super) fn broken_terminal(broken: &mut Option<std::io::Error>) -> Result<(), ClientError> {
    match broken.take() {
        Some(source) => Err(ClientError::Io {
            context: "cannot write to the terminal".into(),
            source,
        }),
        None => Ok(()),
    }
}
