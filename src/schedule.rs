//! Cron schedules of the daemon (`schedule.sync`, `schedule.full_sync`).
//!
//! Owns parsing and validating the six-field (seconds first) cron expressions that
//! tokio-cron-scheduler runs. It must not run syncs itself.

use croner::parser::{CronParser, Seconds};

/// Checks a cron expression the way the scheduler will parse it.
pub fn validate_cron(expr: &str) -> Result<(), String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(expr)
        .map(|_| ())
        .map_err(|e| {
            format!(
                "\"{expr}\" is not a cron expression with seconds, like \"0 */1 * * * *\" ({e})"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_field_expressions_are_accepted_and_five_field_ones_explained() {
        assert!(validate_cron("0 */1 * * * *").is_ok());
        assert!(validate_cron("*/5 * * * * *").is_ok());
        let e = validate_cron("*/5 * * * *").unwrap_err();
        assert!(e.contains("seconds"), "{e}");
    }
}
