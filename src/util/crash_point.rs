//! Named points where a test can make the process die at once, as a
//! SIGKILL or a power cut would (`SLUICE_CRASH_AT=<name>`): the
//! kill-at-every-step tests use them to show what each step of a change
//! leaves behind. Nothing happens unless the variable names the point.
//!
//! Points: `commit:recorded` (a catalogue change's record is durable, the
//! manifest not yet written), `commit:written` (the manifest is written,
//! the answer and its outcome record not yet), `approve:intent`,
//! `approve:policy` (an access approval's intent, then its grant, are
//! durable; the request not yet marked).

/// Dies here if `SLUICE_CRASH_AT` names this point.
pub fn here(point: &str) {
    if std::env::var_os("SLUICE_CRASH_AT").is_some_and(|at| at == point) {
        // No unwinding, no destructors, no buffered writes flushed.
        std::process::abort();
    }
}
