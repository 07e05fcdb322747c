//! `snakepit init DIR`: a new, working install (the files of `template/`, and a sample
//! SQLite database made here), that `check`, `run reissue-monthly-drafts` and `test`
//! pass on at once.

use std::path::Path;
use std::process::ExitCode;

use chrono::{Datelike, Months, Utc};

use crate::error::CliError;
use crate::output::outln;

/// The install's files: path in DIR, content.
const FILES: &[(&str, &str)] = &[
    ("app.toml", include_str!("../template/app.toml")),
    (
        "connectors.toml",
        include_str!("../template/connectors.toml"),
    ),
    (".gitignore", include_str!("../template/gitignore")),
    (
        "plugins/billing/__init__.py",
        include_str!("../template/plugins/billing/__init__.py"),
    ),
    (
        "plugins/billing/invoicing.py",
        include_str!("../template/plugins/billing/invoicing.py"),
    ),
    (
        "plugins/billing/summary.py",
        include_str!("../template/plugins/billing/summary.py"),
    ),
    (
        "plugins/billing/jobs.toml",
        include_str!("../template/plugins/billing/jobs.toml"),
    ),
    (
        "plugins/billing/tests/__init__.py",
        include_str!("../template/plugins/billing/tests/__init__.py"),
    ),
    (
        "plugins/billing/tests/test_invoicing.py",
        include_str!("../template/plugins/billing/tests/test_invoicing.py"),
    ),
];

/// The sample database of connectors.toml's `[sql.billing]`.
const DATABASE: &str = "billing.db";

pub fn run(dir: &Path) -> Result<ExitCode, CliError> {
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(CliError::Usage(format!(
                "{} is not empty: `snakepit init` makes a new install in a new or empty directory",
                dir.display()
            )));
        }
    } else if dir.exists() {
        return Err(CliError::Usage(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let failed = |what: &Path, e: &dyn std::fmt::Display| {
        CliError::Pool(format!("cannot write {}: {e}", what.display()))
    };
    for (name, text) in FILES {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| failed(parent, &e))?;
        }
        std::fs::write(&path, text).map_err(|e| failed(&path, &e))?;
    }
    let db = dir.join(DATABASE);
    sample_database(&db).map_err(|e| failed(&db, &e))?;
    let shown = dir.display();
    outln!(
        "snakepit: a new install in {shown}: app.toml, connectors.toml, {DATABASE} (sample invoices), plugins/billing (steps, jobs.toml, tests)

next:
  cd {shown}
  python3 -m venv .venv && .venv/bin/pip install pytest   # the interpreter, with pytest for `snakepit test`
  snakepit check                          # every reference and query checked
  snakepit run reissue-monthly-drafts     # the job, recorded in the run history (snakepit runs)
  snakepit test                           # the plugin's tests, against billing.db, rolled back
docs: snakepit's README and docs/plugin-authors.md"
    );
    Ok(ExitCode::SUCCESS)
}

/// The invoices table with drafts for last month (UTC; what `${month.previous}` gives
/// the job with the default time zone) and one for this month.
fn sample_database(path: &Path) -> rusqlite::Result<()> {
    let today = Utc::now().date_naive();
    let this = today.format("%Y-%m").to_string();
    let last = (today.with_day(1).unwrap_or(today) - Months::new(1))
        .format("%Y-%m")
        .to_string();
    let db = rusqlite::Connection::open(path)?;
    db.execute_batch(
        "CREATE TABLE invoices (
            id INTEGER PRIMARY KEY,
            customer TEXT NOT NULL,
            amount NUMERIC NOT NULL,
            period TEXT NOT NULL,
            status TEXT NOT NULL CHECK (status IN ('draft', 'issued'))
        )",
    )?;
    let rows = [
        ("ACME", "120.00", &last, "draft"),
        ("Globex", "75.50", &last, "draft"),
        ("Initech", "310.00", &last, "draft"),
        ("Umbrella", "99.00", &last, "issued"),
        ("Hooli", "42.00", &this, "draft"),
    ];
    for (customer, amount, period, status) in rows {
        db.execute(
            "INSERT INTO invoices (customer, amount, period, status) VALUES (?1, ?2, ?3, ?4)",
            (customer, amount, period, status),
        )?;
    }
    Ok(())
}
