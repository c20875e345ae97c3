//! Chat on a terminal, through rustyline: editing keys, a history of the
//! lines typed (kept in memory only: message texts stay out of files other
//! than the home's store), Tab completion of commands and of the pinned
//! contacts' numbers after `send`, and a prompt naming the user.
//!
//! The editor blocks while it reads a line, so it runs on a thread of its
//! own and reads one line each time chat asks for one. Lines chat prints
//! meanwhile go through the editor's external printer, which prints them
//! above the line being typed and redraws that line intact. The editor only
//! holds the terminal (in raw mode) while chat waits for a line, so when chat
//! ends the terminal is given back as it was.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rustyline::completion::Completer;
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor, ExternalPrinter, Helper};
use tokio::sync::mpsc;

use super::commands::NAMES;
use super::screen::{Input, Screen, broken_terminal, keep_first};
use crate::client::ClientError;

type Contacts = Arc<Mutex<Vec<String>>>;

/// What the editor thread answers a request for a line with.
type Answer = std::io::Result<Option<String>>;

/// Chat's side of the editor: asks for lines and receives them.
pub(super) struct TerminalInput {
    ask: std::sync::mpsc::Sender<()>,
    lines: mpsc::UnboundedReceiver<Answer>,
    /// A line was asked for and has not arrived yet.
    asked: bool,
    contacts: Contacts,
}

/// Lines printed above the one being typed.
pub(super) struct TerminalScreen {
    printer: Printer,
    broken: Option<std::io::Error>,
}

type Printer = Arc<Mutex<Box<dyn ExternalPrinter + Send>>>;

/// The editor's thread, to wait for when chat ends.
pub(super) struct EditorThread {
    thread: JoinHandle<()>,
    reading: Arc<std::sync::atomic::AtomicBool>,
    printer: Printer,
}

/// Starts the line editor on standard input and output; `None` when they
/// are not a terminal it can drive (then chat reads plain lines).
pub(super) fn start(
    prompt: String,
    contacts: Vec<String>,
) -> Option<(TerminalInput, TerminalScreen, EditorThread)> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(false)
        .build();
    let mut editor: Editor<ChatHelper, DefaultHistory> = Editor::with_config(config).ok()?;
    let printer: Printer = Arc::new(Mutex::new(Box::new(editor.create_external_printer().ok()?)));
    let contacts: Contacts = Arc::new(Mutex::new(contacts));
    editor.set_helper(Some(ChatHelper {
        contacts: contacts.clone(),
    }));
    let (ask, asks) = std::sync::mpsc::channel();
    let (answers, lines) = mpsc::unbounded_channel();
    let reading = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = std::thread::spawn({
        let reading = reading.clone();
        move || edit(editor, &prompt, &asks, &answers, &reading)
    });
    Some((
        TerminalInput {
            ask,
            lines,
            asked: false,
            contacts,
        },
        TerminalScreen {
            printer: printer.clone(),
            broken: None,
        },
        EditorThread {
            thread,
            reading,
            printer,
        },
    ))
}

/// The editor thread: reads one line per request until chat stops asking.
fn edit(
    mut editor: Editor<ChatHelper, DefaultHistory>,
    prompt: &str,
    asks: &std::sync::mpsc::Receiver<()>,
    answers: &mpsc::UnboundedSender<Answer>,
    reading: &std::sync::atomic::AtomicBool,
) {
    use std::sync::atomic::Ordering;
    while asks.recv().is_ok() {
        reading.store(true, Ordering::SeqCst);
        let answer = match editor.readline(prompt) {
            Ok(line) => {
                if !line.trim().is_empty() {
                    let _ = editor.add_history_entry(line.as_str());
                }
                Ok(Some(line))
            }
            Err(ReadlineError::Eof | ReadlineError::Interrupted) => Ok(None),
            Err(ReadlineError::Io(e)) => Err(e),
            Err(e) => Err(std::io::Error::other(e)),
        };
        reading.store(false, Ordering::SeqCst);
        let last = !matches!(answer, Ok(Some(_)));
        if answers.send(answer).is_err() || last {
            break;
        }
    }
}

impl Input for TerminalInput {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        if !self.asked {
            if self.ask.send(()).is_err() {
                return Ok(None);
            }
            self.asked = true;
        }
        let answer = self.lines.recv().await.unwrap_or(Ok(None));
        self.asked = false;
        answer
    }

    fn set_contacts(&mut self, phones: Vec<String>) {
        *self.contacts.lock().unwrap_or_else(|p| p.into_inner()) = phones;
    }
}

impl Screen for TerminalScreen {
    fn out(&mut self, line: &str) {
        let printed = (self.printer.lock().unwrap_or_else(|p| p.into_inner()))
            .print(format!("{line}\n"))
            .map_err(std::io::Error::other);
        keep_first(&mut self.broken, printed);
    }

    fn err(&mut self, line: &str) {
        self.out(line);
    }

    fn check(&mut self) -> Result<(), ClientError> {
        broken_terminal(&mut self.broken)
    }
}

/// Prints a line above the one being typed.
fn print_above(printer: &Printer, line: &str) {
    let mut printer = printer.lock().unwrap_or_else(|p| p.into_inner());
    let _ = printer.print(format!("{line}\n"));
}

impl EditorThread {
    /// Notices (a key pinned on first use) printed above the line being
    /// typed rather than across it.
    pub fn notices(&self) -> crate::client::Notify {
        let printer = self.printer.clone();
        Arc::new(move |n| print_above(&printer, &crate::client::show::notice(&n)))
    }

    /// Waits for the editor to give the terminal back. Chat ended by itself
    /// (an error) while the editor was reading: the user is asked to press
    /// Enter, as the editor cannot be interrupted.
    pub async fn finish(self, ended: Result<(), ClientError>) -> Result<(), ClientError> {
        if self.reading.load(std::sync::atomic::Ordering::SeqCst) {
            let why = match &ended {
                Err(e) => crate::client::show::error(e),
                Ok(()) => "The chat ended.".into(),
            };
            print_above(&self.printer, &format!("{why}\nPress Enter to leave."));
        }
        let _ = tokio::task::spawn_blocking(move || self.thread.join()).await;
        ended
    }
}

/// Completes command names, and contacts' numbers after `send`.
struct ChatHelper {
    contacts: Contacts,
}

impl Completer for ChatHelper {
    type Candidate = String;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<String>)> {
        let typed = &line[..pos];
        let candidates = match typed.split_once(' ') {
            None => NAMES
                .iter()
                .filter(|n| n.starts_with(typed))
                .map(|n| format!("{n} "))
                .collect(),
            Some((cmd, phone)) if matches!(cmd, "send" | "/send") && !phone.contains(' ') => {
                let contacts = self.contacts.lock().unwrap_or_else(|p| p.into_inner());
                let found = contacts
                    .iter()
                    .filter(|c| c.starts_with(phone))
                    .map(|c| format!("{c} "))
                    .collect();
                return Ok((cmd.len() + 1, found));
            }
            Some(_) => Vec::new(),
        };
        Ok((0, candidates))
    }
}

impl Hinter for ChatHelper {
    type Hint = String;
}

impl Highlighter for ChatHelper {}

impl Validator for ChatHelper {}

impl Helper for ChatHelper {}

#[cfg(test)]
mod tests {
    use super::*;
    use rustyline::history::DefaultHistory;

    fn complete(line: &str) -> (usize, Vec<String>) {
        let helper = ChatHelper {
            contacts: Arc::new(Mutex::new(vec![
                "+12025550101".into(),
                "+12025550102".into(),
                "+447700900123".into(),
            ])),
        };
        let history = DefaultHistory::new();
        helper
            .complete(line, line.len(), &Context::new(&history))
            .unwrap()
    }

    #[test]
    fn tab_completes_commands_then_contacts_numbers_after_send() {
        assert_eq!(complete("br"), (0, vec!["broadcast ".to_owned()]));
        assert_eq!(complete("/h"), (0, vec!["/help ".to_owned()]));
        assert_eq!(
            complete("send +1202"),
            (
                5,
                vec!["+12025550101 ".to_owned(), "+12025550102 ".to_owned()]
            )
        );
        assert_eq!(complete("send +44"), (5, vec!["+447700900123 ".to_owned()]));
        assert_eq!(complete("send +12025550101 hel"), (0, vec![]));
        assert_eq!(complete("broadcast +1"), (0, vec![]));
    }
}
