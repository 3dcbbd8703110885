//! The result of `provision verify`: one row per thing tried, printed as a table or as JSON.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Pass,
    Fail,
    /// Not checked, for the reason in the row's detail.
    Skipped,
    /// The check ran and found the feature absent, which the chosen CNI does not promise.
    NotEnforced,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Pass => "ok",
            Outcome::Fail => "FAIL",
            Outcome::Skipped => "skipped",
            Outcome::NotEnforced => "not enforced",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// What kind of check: `api`, `node`, `pod-to-pod`, ...
    pub check: String,
    /// What it was tried on: a node, or `from → to`.
    pub subject: String,
    pub outcome: Outcome,
    /// What was tried and what came back.
    pub detail: String,
    /// For failures: the likely cause and what to look at.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Row {
    pub fn new(
        check: &str,
        subject: impl Into<String>,
        outcome: Outcome,
        detail: impl Into<String>,
    ) -> Row {
        Row {
            check: check.into(),
            subject: subject.into(),
            outcome,
            detail: detail.into(),
            cause: None,
        }
    }

    pub fn pass(check: &str, subject: impl Into<String>, detail: impl Into<String>) -> Row {
        Row::new(check, subject, Outcome::Pass, detail)
    }

    pub fn fail(check: &str, subject: impl Into<String>, detail: impl Into<String>) -> Row {
        Row::new(check, subject, Outcome::Fail, detail)
    }

    pub fn skipped(check: &str, subject: impl Into<String>, why: impl Into<String>) -> Row {
        Row::new(check, subject, Outcome::Skipped, why)
    }

    pub fn with_cause(mut self, cause: Option<String>) -> Row {
        self.cause = cause;
        self
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| r.outcome == Outcome::Fail)
    }

    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    /// `12 ok, 1 failed, 2 skipped`.
    pub fn summary(&self) -> String {
        let count = |o: Outcome| self.rows.iter().filter(|r| r.outcome == o).count();
        let mut parts = vec![format!("{} ok", count(Outcome::Pass))];
        for (o, word) in [
            (Outcome::Fail, "failed"),
            (Outcome::NotEnforced, "not enforced"),
            (Outcome::Skipped, "skipped"),
        ] {
            if count(o) > 0 {
                parts.push(format!("{} {word}", count(o)));
            }
        }
        parts.join(", ")
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "passed": self.passed(),
            "summary": self.summary(),
            "rows": self.rows,
        })
        .to_string()
    }

    pub fn table(&self) -> String {
        let w_check = self
            .rows
            .iter()
            .map(|r| r.check.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let w_subj = self
            .rows
            .iter()
            .map(|r| r.subject.chars().count())
            .max()
            .unwrap_or(7)
            .max(7);
        let mut out = format!(
            "{:<w_check$}  {:<w_subj$}  {:<12}  DETAIL\n",
            "CHECK", "SUBJECT", "RESULT"
        );
        for r in &self.rows {
            let pad = w_subj - r.subject.chars().count();
            out.push_str(&format!(
                "{:<w_check$}  {}{}  {:<12}  {}\n",
                r.check,
                r.subject,
                " ".repeat(pad),
                r.outcome.word(),
                r.detail
            ));
            if let Some(c) = &r.cause {
                out.push_str(&format!(
                    "{:<w_check$}  {:<w_subj$}  {:<12}  likely cause: {c}\n",
                    "", "", ""
                ));
            }
        }
        out.push_str(&format!("\n{}\n", self.summary()));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_shows_its_cause_under_its_row_and_fails_the_report()
    -> Result<(), Box<dyn std::error::Error>> {
        let mut r = Report::default();
        r.rows.push(Row::pass("node", "n1", "Ready"));
        r.rows.push(
            Row::fail(
                "pod-to-pod",
                "n1 → n2",
                "wget http://10.88.1.2:8080/: timed out",
            )
            .with_cause(Some("no route to n2's pod range on n1".into())),
        );
        r.rows
            .push(Row::skipped("dns", "n1", "CoreDNS is not deployed"));
        assert!(!r.passed());
        assert_eq!(r.summary(), "1 ok, 1 failed, 1 skipped");
        let t = r.table();
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[2].starts_with("pod-to-pod  n1 → n2  FAIL"), "{t}");
        assert!(
            lines[3].trim_start().starts_with("likely cause: no route"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&r.json())?;
        assert_eq!(j["passed"], false);
        assert_eq!(j["rows"][1]["outcome"], "fail");
        assert_eq!(j["rows"][2]["outcome"], "skipped");
        assert!(j["rows"][0].get("cause").is_none());
        Ok(())
    }
}
