//! Termination requests (SIGTERM, SIGINT), owned from the agent's first
//! instruction.
//!
//! A handler installed once the runtime is up leaves a window at start in
//! which SIGTERM's default action kills the agent without cleanup: a
//! restarted agent that finds its predecessor's entry and is told to stop
//! at once would leave the entry, the binary and the kubeconfig behind.
//! Instead `main` blocks both signals before anything else ([`block`]), so a
//! signal arriving at any later instant stays pending; every thread started
//! afterwards inherits the mask, and one thread ([`Shutdown::listen`])
//! accepts the signals with `sigwait` and turns them into a request that
//! every wait of the agent observes. Blocking also keeps the signal queued
//! when the agent is PID 1 of its container, where the kernel drops a
//! default-action SIGTERM instead of delivering it.
//!
//! Child processes do not inherit the block: std's `Command` resets the
//! signal mask before exec.

use std::io;

use nix::sys::signal::{SigSet, Signal};
use tokio::sync::watch;

/// The signals that ask the agent to clean up and exit.
pub fn signals() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Blocks SIGTERM and SIGINT in the calling thread and so in every thread
/// it starts later. Call it first in `main`, before any thread exists: a
/// thread without the block would take the signal's default action.
pub fn block() -> io::Result<()> {
    signals().thread_block().map_err(io::Error::from)
}

/// The termination request: `None` until a signal arrives.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<Option<Signal>>);

/// Makes the request by hand (tests, embedders without signals).
pub struct Trigger(watch::Sender<Option<Signal>>);

impl Trigger {
    pub fn request(&self, signal: Signal) {
        self.0.send_replace(Some(signal));
    }
}

impl Shutdown {
    /// Starts the thread that accepts the signals [`block`] blocked; one
    /// pending since before this call is taken at once. Later signals are
    /// logged and otherwise ignored: the cleanup already running finishes.
    pub fn listen() -> io::Result<Shutdown> {
        let (tx, rx) = watch::channel(None);
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            let set = signals();
            loop {
                match set.wait() {
                    Ok(signal) if tx.borrow().is_some() => {
                        tracing::info!(target: "cni-agent", "{signal}: already cleaning up");
                    }
                    Ok(signal) => {
                        tx.send_replace(Some(signal));
                    }
                    Err(e) => {
                        // sigwait fails only for an invalid set: cannot happen
                        // with a fixed one; say so rather than spin.
                        tracing::error!(target: "cni-agent", "sigwait: {e}; SIGTERM/SIGINT now go unanswered");
                        return;
                    }
                }
            }
        })?;
        Ok(Shutdown(rx))
    }

    /// A request made through the returned [`Trigger`] instead of signals.
    pub fn manual() -> (Trigger, Shutdown) {
        let (tx, rx) = watch::channel(None);
        (Trigger(tx), Shutdown(rx))
    }

    /// The signal that asked for termination, if one did.
    pub fn requested(&self) -> Option<Signal> {
        *self.0.borrow()
    }

    /// Resolves once termination is requested (at once if it already was);
    /// never, when nothing can request it any more.
    pub async fn wait(&mut self) -> Signal {
        // The borrow of the value ends here, before any other await.
        let requested = self.0.wait_for(Option::is_some).await.ok().and_then(|s| *s);
        match requested {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn manual_request_wakes_every_waiter() {
        let (trigger, shutdown) = Shutdown::manual();
        let mut a = shutdown.clone();
        let waiter = tokio::spawn(async move { a.wait().await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(shutdown.requested().is_none());
        trigger.request(Signal::SIGINT);
        assert_eq!(waiter.await.unwrap(), Signal::SIGINT);
        // A request made before the wait starts is seen at once.
        let mut b = shutdown.clone();
        assert_eq!(b.wait().await, Signal::SIGINT);
    }

    #[tokio::test]
    async fn dropped_trigger_never_resolves() {
        let (trigger, mut shutdown) = Shutdown::manual();
        drop(trigger);
        let waited = tokio::time::timeout(Duration::from_millis(20), shutdown.wait()).await;
        assert!(waited.is_err());
    }
}
