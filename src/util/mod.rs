//! Small tools the domain modules share and that know nothing of the
//! domain: durable file replacement, stored request echoes, internal
//! errors with a reference, key files, "did you mean" suggestions, word
//! lists, and the crash points the fault tests kill the server at.

pub mod crash_point;
pub mod durable;
pub mod echo;
pub mod internal;
pub mod key_file;
pub mod runtime;
pub mod suggest;
pub mod words;
