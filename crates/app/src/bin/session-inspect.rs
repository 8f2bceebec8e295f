//! `session-inspect [<id>]`: prints one session's fields, decrypted with
//! the app's key ring (the same settings layers as the app), and never
//! writes. The id comes from the argument, or else from stdin, so that it
//! need not sit in the shell history.
//!
//! Exit codes: 0 every field reads; 2 no such session; 3 a field would be
//! refused (the session counts as gone); 1 anything else.

use std::io::Read as _;
use std::process::ExitCode;

use app::inspect::{Outcome, inspect};
use app::settings::Settings;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let id = match std::env::args().nth(1) {
        Some(id) => id,
        None => {
            let mut text = String::new();
            if std::io::stdin().read_to_string(&mut text).is_err() {
                eprintln!("session-inspect: cannot read the id from stdin");
                return ExitCode::FAILURE;
            }
            text
        }
    };
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("session-inspect: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = String::new();
    match inspect(&settings, &id, &mut report).await {
        Ok(outcome) => {
            print!("{report}");
            ExitCode::from(match outcome {
                Outcome::Readable => 0,
                Outcome::NoSession => 2,
                Outcome::Unreadable => 3,
            })
        }
        Err(error) => {
            eprintln!("session-inspect: {error}");
            ExitCode::FAILURE
        }
    }
}
