//! Where the time of one delete went, for the debug log
//! (`log.level = "info,regate::tag_delete=debug"`): milliseconds per step.

use std::fmt;
use std::time::Instant;

pub(super) struct Steps {
    last: Instant,
    done: Vec<(&'static str, f64)>,
}

impl Steps {
    pub fn start() -> Self {
        Steps {
            last: Instant::now(),
            done: Vec::with_capacity(6),
        }
    }

    /// Ends the step `name` now.
    pub fn mark(&mut self, name: &'static str) {
        let now = Instant::now();
        let ms = now.duration_since(self.last).as_secs_f64() * 1000.0;
        self.done.push((name, ms));
        self.last = now;
    }
}

impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, ms)) in self.done.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={ms:.2}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lists_each_step_in_order() {
        let mut s = super::Steps::start();
        s.mark("resolve");
        s.mark("intent");
        let text = s.to_string();
        assert!(text.starts_with("resolve="), "{text}");
        assert!(text.contains(" intent="), "{text}");
    }
}
