//! Stopping a run cleanly. SIGINT (Ctrl-C) and SIGTERM (what `kill`, `scancel` and SLURM's time
//! limit send first) only set a flag; the training loop reads it after each optimiser step,
//! writes a checkpoint at that step and returns, so `train --resume` continues exactly where the
//! run stopped. A second signal while that checkpoint is being written ends the process at once
//! (the checkpoint write is atomic, so the previous checkpoint is still intact).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// A request to stop after the current step: the signal number that asked, or a caller's.
#[derive(Debug, Clone, Default)]
pub struct StopRequest(Arc<AtomicUsize>);

impl StopRequest {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask the run to stop after its current step (`why`: a signal number, for the message).
    pub fn request(&self, why: i32) {
        self.0.store(why.max(1) as usize, Ordering::SeqCst);
    }

    /// The signal (or caller code) that asked for a stop, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.0.load(Ordering::SeqCst) {
            0 => None,
            n => Some(n as i32),
        }
    }

    /// Route SIGINT and SIGTERM to this request. The first one sets it; a second one exits the
    /// process with status 128 + signal, as an unhandled signal would.
    pub fn on_signals(&self) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let second = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registration order is execution order: the exit check sees the flag as it was
            // before this signal arrived.
            signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, Arc::clone(&second))?;
            signal_hook::flag::register_usize(sig, Arc::clone(&self.0), sig as usize)?;
            signal_hook::flag::register(sig, Arc::clone(&second))?;
        }
        Ok(())
    }
}

/// The usual name of a signal number, for messages.
pub fn signal_name(sig: i32) -> String {
    match sig {
        signal_hook::consts::SIGINT => "SIGINT".into(),
        signal_hook::consts::SIGTERM => "SIGTERM".into(),
        n => format!("a stop request ({n})"),
    }
}
