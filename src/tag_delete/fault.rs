//! Fault injection for crash tests: with `REGATE_TEST_FAULT=tag_delete:<step>`
//! in the environment, the process aborts (no cleanup, like a crash or
//! SIGKILL) when a tag delete reaches that step. Read once at start-up.

/// The steps at which a delete can be made to crash (on any registry; a
/// batch also has `after_native`, reached only on a registry with its own
/// tag delete).
pub const STEPS: [&str; 4] = [
    "after_intent",
    "after_config",
    "after_dummy_put",
    "after_dummy_delete",
];

#[derive(Debug, Clone, Default)]
pub struct Faults {
    step: Option<String>,
}

impl Faults {
    pub fn from_env() -> Self {
        let step = std::env::var("REGATE_TEST_FAULT")
            .ok()
            .and_then(|v| v.strip_prefix("tag_delete:").map(str::to_owned));
        if let Some(s) = &step {
            tracing::warn!(step = %s, "fault injection is on: regate will abort at this tag-delete step");
        }
        Faults { step }
    }

    pub fn at(&self, step: &str) {
        if self.step.as_deref() == Some(step) {
            eprintln!("REGATE_TEST_FAULT: aborting at tag_delete:{step}");
            std::process::abort();
        }
    }
}
