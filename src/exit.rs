//! The process exit codes of SPEC "Exit codes", in one place. Scripts and schedulers branch on
//! these numbers, so they never change; `main` is the only place that turns one into a process
//! exit. This module decides nothing: the commands pick the code.

/// What the process tells its caller. The numbers are a contract (SPEC "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(i32)]
pub enum ExitCode {
    /// 0: every reference was exported (for `verify`: everything holds; for `plan`, `demo` and
    /// `simulate`: the command did what it was asked).
    Success = 0,
    /// 1: the run finished but some references were not exported; each is in `failures.csv`
    /// and a later run tries it again (for `verify`: the dataset has findings).
    Partial = 1,
    /// 2: usage or job-file error; the message names the file, line and key. clap's own
    /// argument errors exit with the same code.
    Usage = 2,
    /// 3: fatal: the API refused the credentials (401/403 on a status call) or the output
    /// location is unusable. The job stops at once rather than hammer the API.
    Fatal = 3,
    /// 130: interrupted (Ctrl-C, SIGTERM); run the same command again to resume.
    Interrupted = 130,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> i32 {
        self as i32
    }
}

impl TryFrom<i32> for ExitCode {
    /// The number, when it is none of the documented codes.
    type Error = i32;

    fn try_from(code: i32) -> Result<Self, i32> {
        [
            ExitCode::Success,
            ExitCode::Partial,
            ExitCode::Usage,
            ExitCode::Fatal,
            ExitCode::Interrupted,
        ]
        .into_iter()
        .find(|c| c.code() == code)
        .ok_or(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_numbers_and_round_trip() {
        let all = [
            (ExitCode::Success, 0),
            (ExitCode::Partial, 1),
            (ExitCode::Usage, 2),
            (ExitCode::Fatal, 3),
            (ExitCode::Interrupted, 130),
        ];
        for (exit, n) in all {
            assert_eq!(exit.code(), n);
            assert_eq!(ExitCode::try_from(n), Ok(exit));
        }
        assert_eq!(ExitCode::try_from(4), Err(4));
    }
}
