//! One server per data directory: a second `carrier-server` on the same
//! directory exits at once, naming the first one's PID; once the first has
//! stopped (even by SIGKILL) the directory is free again.

use crate::process::{ServerFiles, run, stderr_of};

#[test]
fn a_second_server_on_one_data_directory_is_refused() {
    let files = ServerFiles::new();
    let mut first = files.start();
    let second = run(&mut files.command(), "a second carrier-server");
    assert!(!second.status.success(), "the second server started");
    let err = stderr_of(&second);
    assert!(
        err.contains(&format!("another carrier-server (PID {})", first.pid())),
        "{err}"
    );
    first.kill_9();
    let mut again = files.start();
    assert!(again.terminate().success());
}
