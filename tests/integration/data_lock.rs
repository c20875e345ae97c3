//! One server per data directory: a second `carrier-server` on the same
//! directory exits at once, naming the first one's PID; once the first has
//! stopped (even by SIGKILL) the directory is free again.

use crate::process::{ServerFiles, run, stderr_of};

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let files = ServerFiles::new();
    let mut first = files.start();
    // Asked for backtraces, a refusal to start is still one line.
    let mut second = files.command();
    second.env("RUST_BACKTRACE", "1");
    let second = run(&mut second, "a second carrier-server");
    assert_eq!(second.status.code(), Some(1), "the second server started");
    let err = stderr_of(&second);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!(
            "carrier-server: another carrier-server (PID {})",
            first.pid()
        )),
        "{err}"
    );
    assert!(
        !err.contains("backtrace") && !err.contains("Caused by"),
        "{err}"
    );
    first.kill_9();
    let mut again = files.start();
    assert!(again.terminate().success());
}
