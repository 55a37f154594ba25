//! The trainers' progress line on stderr (`Config::progress`): indicatif's bar where the
//! `cli` feature brings indicatif, nothing in a build of the engine alone.

/// A bar over a run's corpus words, or nothing.
pub(crate) struct Progress {
    #[cfg(feature = "cli")]
    bar: indicatif::ProgressBar,
}

impl Progress {
    /// A bar over `total` words, drawn only when `show`.
    pub fn new(show: bool, total: u64) -> Self {
        #[cfg(feature = "cli")]
        {
            let bar = if show {
                let bar = indicatif::ProgressBar::new(total);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    "{bar:30} {percent:>3}% {msg} (eta {eta})",
                ) {
                    bar.set_style(style);
                }
                bar
            } else {
                indicatif::ProgressBar::hidden()
            };
            Self { bar }
        }
        #[cfg(not(feature = "cli"))]
        {
            let _ = (show, total);
            Self {}
        }
    }

    /// Words done so far.
    pub fn set_position(&self, words: u64) {
        #[cfg(feature = "cli")]
        self.bar.set_position(words);
        #[cfg(not(feature = "cli"))]
        let _ = words;
    }

    /// The text beside the bar (speed, learning rate, loss), built only where it is shown.
    pub fn set_message(&self, message: impl FnOnce() -> String) {
        #[cfg(feature = "cli")]
        self.bar.set_message(message());
        #[cfg(not(feature = "cli"))]
        let _ = message;
    }

    /// Removes the bar.
    pub fn finish(&self) {
        #[cfg(feature = "cli")]
        self.bar.finish_and_clear();
    }
}
