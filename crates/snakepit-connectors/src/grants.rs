//! What each plugin package may use (app.toml `[plugins.PKG]`, README "Connectors").

use std::collections::BTreeMap;

/// One `[plugins.PKG]` table's connector grants; a key left out takes `[plugins."*"]`'s,
/// else the default (all connectors, write queries allowed, no raw pools).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grant {
    /// The connectors (SQL and API) the package may use.
    pub connectors: Option<Vec<String>>,
    /// Whether it may run write queries (names ending `:write`).
    pub write: Option<bool>,
    /// The SQL connectors it may open raw transactions on (`ctx["pools"]`).
    pub raw_pools: Option<Vec<String>>,
}

/// Every package's grants.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    by_package: BTreeMap<String, Grant>,
}

impl Grants {
    /// Grants by package; `"*"` is the table of packages without their own.
    pub fn new(by_package: BTreeMap<String, Grant>) -> Grants {
        Grants { by_package }
    }

    fn pick<'a, T>(&'a self, package: &str, f: impl Fn(&'a Grant) -> Option<T>) -> Option<T> {
        self.by_package
            .get(package)
            .and_then(&f)
            .or_else(|| self.by_package.get("*").and_then(&f))
    }

    /// Whether `package` may use connector `name`.
    pub fn connector(&self, package: &str, name: &str) -> bool {
        self.pick(package, |g| g.connectors.as_ref())
            .is_none_or(|list| list.iter().any(|c| c == name))
    }

    /// Whether `package` may run write queries.
    pub fn write(&self, package: &str) -> bool {
        self.pick(package, |g| g.write).unwrap_or(true)
    }

    /// Whether `package` may open transactions on SQL connector `name`.
    pub fn raw_pool(&self, package: &str, name: &str) -> bool {
        self.pick(package, |g| g.raw_pools.as_ref())
            .is_some_and(|list| list.iter().any(|c| c == name))
    }

    /// Every connector name the grants mention, with the package and key that does.
    pub fn named(&self) -> impl Iterator<Item = (&str, &'static str, &str)> {
        self.by_package.iter().flat_map(|(pkg, g)| {
            let c = g
                .connectors
                .iter()
                .flatten()
                .map(move |c| (pkg.as_str(), "connectors", c.as_str()));
            let r = g
                .raw_pools
                .iter()
                .flatten()
                .map(move |c| (pkg.as_str(), "raw_pools", c.as_str()));
            c.chain(r)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_falls_back_to_star_then_the_default() {
        let mut m = BTreeMap::new();
        m.insert(
            "billing".to_owned(),
            Grant {
                connectors: Some(vec!["billing".into()]),
                raw_pools: Some(vec!["billing".into()]),
                ..Default::default()
            },
        );
        m.insert(
            "*".to_owned(),
            Grant {
                write: Some(false),
                ..Default::default()
            },
        );
        let g = Grants::new(m);
        assert!(g.connector("billing", "billing") && !g.connector("billing", "crm"));
        assert!(!g.write("billing"), "write comes from [plugins.\"*\"]");
        assert!(g.raw_pool("billing", "billing"));
        assert!(g.connector("other", "crm"), "default: every connector");
        assert!(!g.raw_pool("other", "billing"), "default: no raw pools");
        let open = Grants::default();
        assert!(open.write("x") && open.connector("x", "y") && !open.raw_pool("x", "y"));
    }
}
