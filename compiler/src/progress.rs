//! Progress of long steps on stderr (loading and binding weights, the passes, planning,
//! writing the crate, the reference interpreter).
//!
//! On a terminal the current step is an indicatif spinner with its elapsed time, and each
//! finished step stays as a line with the time it took; anywhere else (a pipe, a log file, a
//! test capturing stderr) every step is one plain `effdetc: ...` line as it starts, so logs
//! stay greppable and carry no control characters.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Reports steps as they start; see the module docs for the two forms.
pub struct Progress {
    prefix: &'static str,
    /// `Some` on a terminal: the spinner and the step it shows.
    live: Option<(ProgressBar, String, Instant)>,
}

impl Progress {
    /// A spinner when stderr is a terminal, plain lines otherwise.
    pub fn stderr(prefix: &'static str) -> Progress {
        let live = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template("{spinner} {prefix}: {wide_msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(prefix);
            bar.enable_steady_tick(Duration::from_millis(100));
            (bar, String::new(), Instant::now())
        });
        Progress { prefix, live }
    }

    /// Plain lines whatever stderr is (for tests of the plain form).
    pub fn plain(prefix: &'static str) -> Progress {
        Progress { prefix, live: None }
    }

    /// A new step starts (and the previous one ends). Lines starting with `warning:` are
    /// printed as they are, not as steps.
    pub fn step(&mut self, text: &str) {
        let prefix = self.prefix;
        match &mut self.live {
            None if text.starts_with("warning:") => eprintln!("{text}"),
            None => eprintln!("{prefix}: {text}"),
            Some((bar, _, _)) if text.starts_with("warning:") => bar.println(text),
            Some((bar, current, started)) => {
                if !current.is_empty() {
                    bar.println(format!(
                        "{prefix}: {current} ({:.1} s)",
                        started.elapsed().as_secs_f64()
                    ));
                }
                *current = text.to_string();
                *started = Instant::now();
                bar.set_message(current.clone());
                bar.reset_elapsed();
            }
        }
    }

    /// Ends the last step: on a terminal the spinner is replaced by its line.
    pub fn finish(&mut self) {
        if let Some((bar, current, started)) = self.live.take() {
            bar.finish_and_clear();
            if !current.is_empty() {
                eprintln!(
                    "{}: {current} ({:.1} s)",
                    self.prefix,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    }
}

impl Drop for Progress {
    /// An early return (an error) must not leave a spinner drawn over the error message.
    fn drop(&mut self) {
        self.finish();
    }
}
