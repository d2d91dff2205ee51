//! Asking for a password at the terminal without showing it, and reading one piped in.
//!
//! The prompt goes to the controlling terminal (`/dev/tty`), not to stdout or stderr, so that
//! `stratus login | …` still asks; echo is turned off with `stty` for the time of the answer
//! and turned back to what it was, whatever happens in between.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use crate::error::{Error, Result};

/// Asks the person at the terminal for a secret. The binary's is [`Tty`]; tests answer
/// with their own.
pub trait SecretPrompt: Send {
    /// Shows `prompt`, reads one line without echoing it, and returns it without its line end.
    fn read_secret(&mut self, prompt: &str) -> std::io::Result<String>;
}

/// The controlling terminal of the process.
pub struct Tty;

impl SecretPrompt for Tty {
    fn read_secret(&mut self, prompt: &str) -> std::io::Result<String> {
        let mut tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
        let echo = EchoOff::new(&tty)?;
        tty.write_all(prompt.as_bytes())?;
        tty.flush()?;
        let mut line = String::new();
        let read = BufReader::new(tty.try_clone()?).read_line(&mut line);
        drop(echo);
        // The Enter typed was not echoed: end the prompt's line.
        let _ = tty.write_all(b"\n");
        if read? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no answer (end of input)"));
        }
        Ok(trim_line_end(&line).to_string())
    }
}

/// Echo turned off on a terminal until dropped, when the terminal's settings are put back.
struct EchoOff {
    tty: File,
    saved: String,
}

impl EchoOff {
    fn new(tty: &File) -> std::io::Result<EchoOff> {
        let saved = stty(tty, &["-g"])?;
        stty(tty, &["-echo"])?;
        Ok(EchoOff { tty: tty.try_clone()?, saved: saved.trim().to_string() })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // Nothing better can be done if the terminal went away meanwhile.
        let _ = stty(&self.tty, &[self.saved.as_str()]);
    }
}

/// Runs `stty ARGS` on `tty` and returns what it printed.
fn stty(tty: &File, args: &[&str]) -> std::io::Result<String> {
    let out = Command::new("stty").args(args).stdin(tty.try_clone()?).stderr(Stdio::null()).output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!("stty {} failed ({})", args.join(" "), out.status)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `--password-stdin`: the first line of stdin, without its line end.
pub fn read_stdin_secret(stdin: &mut dyn Read) -> Result<String> {
    let mut text = String::new();
    stdin.read_to_string(&mut text).map_err(|source| Error::Read { path: "STDIN".into(), source })?;
    let line = text.lines().next().map(trim_line_end).unwrap_or_default();
    if line.is_empty() {
        return Err(Error::Usage("--password-stdin: stdin holds no password".into()));
    }
    Ok(line.to_string())
}

/// Asks for a password at the terminal, showing `text`; an empty answer is no password.
pub fn ask(prompt: Option<&mut Box<dyn SecretPrompt>>, text: &str) -> Result<String> {
    let Some(prompt) = prompt else {
        return Err(no_terminal("there is no terminal to ask for the password"));
    };
    match prompt.read_secret(text) {
        Ok(answer) if answer.is_empty() => Err(Error::Usage("no password given".into())),
        Ok(answer) => Ok(answer),
        Err(e) => Err(no_terminal(&format!("cannot ask for the password at the terminal ({e})"))),
    }
}

fn no_terminal(why: &str) -> Error {
    Error::Usage(format!("{why}: pipe it in with --password-stdin"))
}

fn trim_line_end(line: &str) -> &str {
    line.trim_end_matches(['\n', '\r'])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    struct Answer(std::io::Result<String>);

    impl SecretPrompt for Answer {
        fn read_secret(&mut self, _: &str) -> std::io::Result<String> {
            std::mem::replace(&mut self.0, Ok(String::new()))
        }
    }

    #[test]
    fn stdin_gives_its_first_line() {
        assert_eq!(read_stdin_secret(&mut "s3cret pass\r\nmore\n".as_bytes()).unwrap(), "s3cret pass");
        assert_eq!(read_stdin_secret(&mut "s3cret".as_bytes()).unwrap(), "s3cret");
        let err = read_stdin_secret(&mut "".as_bytes()).unwrap_err().to_string();
        assert_eq!(err, "--password-stdin: stdin holds no password");
    }

    #[test]
    fn without_a_terminal_the_message_says_to_pipe_the_password_in() {
        let err = ask(None, "Password: ").unwrap_err().to_string();
        assert_eq!(err, "there is no terminal to ask for the password: pipe it in with --password-stdin");
        let mut failing: Box<dyn SecretPrompt> =
            Box::new(Answer(Err(std::io::Error::from(std::io::ErrorKind::NotFound))));
        let err = ask(Some(&mut failing), "Password: ").unwrap_err().to_string();
        assert!(err.starts_with("cannot ask for the password at the terminal ("), "{err}");
        assert!(err.ends_with("pipe it in with --password-stdin"), "{err}");
        let mut answering: Box<dyn SecretPrompt> = Box::new(Answer(Ok("pw".into())));
        assert_eq!(ask(Some(&mut answering), "Password: ").unwrap(), "pw");
    }
}
