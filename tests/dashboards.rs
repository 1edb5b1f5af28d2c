//! The Grafana dashboards in `dashboards/`: importable as they are (the dashboard fields, a
//! datasource input), and every metric and label their queries name is one egresslens exports,
//! as Prometheus names it when an OpenTelemetry Collector feeds it (dots to underscores, unit
//! and `_total` suffixes).

#![allow(clippy::unwrap_used)] // a failed step should fail the test right there

use std::collections::BTreeSet;
use std::path::PathBuf;

use egresslens::export::metrics::{METRICS, attr, prometheus_names};
use serde_json::Value;

fn dashboards() -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path).unwrap();
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
            found.push((path.file_name().unwrap().to_string_lossy().into_owned(), json));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn metric_names() -> BTreeSet<String> {
    METRICS.iter().flat_map(|(name, kind, unit)| prometheus_names(name, *kind, unit)).collect()
}

/// The labels a query may use: the exported attributes, and the histogram's `le`.
fn label_names() -> BTreeSet<String> {
    attr::ALL.iter().map(|a| a.replace('.', "_")).chain(["le".to_owned()]).collect()
}

/// Identifiers of a PromQL expression with the character that follows each (after spaces).
fn identifiers(expr: &str) -> Vec<(String, Option<char>)> {
    let chars: Vec<char> = expr.chars().collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        // `$host`, `$__range`: Grafana variables, not PromQL names.
        if c == '$' {
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            continue;
        }
        // Quoted label values are not names either.
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let name: String = chars[start..i].iter().collect();
            let next = chars[i..].iter().copied().find(|c| !c.is_whitespace());
            found.push((name, next));
            continue;
        }
        i += 1;
    }
    found
}

/// The label names an expression uses: in selectors (`{name="…"}`) and in `by`/`on` lists.
fn labels_used(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    let words = identifiers(expr);
    let mut in_list = false;
    for (i, (name, next)) in words.iter().enumerate() {
        let previous = i.checked_sub(1).map(|p| words[p].0.as_str());
        if matches!(next, Some('=') | Some('!')) {
            labels.push(name.clone());
        }
        if matches!(previous, Some("by" | "on" | "without" | "ignoring")) {
            in_list = true;
        }
        if in_list && !matches!(name.as_str(), "by" | "on" | "without" | "ignoring") {
            labels.push(name.clone());
            if *next == Some(')') {
                in_list = false;
            }
        }
    }
    labels
}

#[test]
fn every_dashboard_is_importable_as_it_is() {
    let dashboards = dashboards();
    assert!(dashboards.len() >= 4, "overview, host, findings, collector health");
    let mut uids = BTreeSet::new();
    for (file, dashboard) in &dashboards {
        for key in ["title", "uid"] {
            assert!(dashboard[key].as_str().is_some_and(|t| !t.is_empty()), "{file}: {key}");
        }
        assert!(uids.insert(dashboard["uid"].as_str().unwrap().to_owned()), "{file}: uid reused");
        assert!(dashboard["schemaVersion"].as_u64().is_some(), "{file}: schemaVersion");
        assert!(dashboard["templating"]["list"].is_array(), "{file}: templating");
        let inputs = dashboard["__inputs"].as_array().unwrap();
        assert!(
            inputs.iter().any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
            "{file}: a Prometheus datasource input"
        );
        let panels = dashboard["panels"].as_array().unwrap();
        assert!(!panels.is_empty(), "{file}: panels");
        let mut ids = BTreeSet::new();
        for panel in panels {
            let title = panel["title"].as_str().unwrap();
            assert!(ids.insert(panel["id"].as_u64().unwrap()), "{file}: panel id of {title}");
            assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{file}: {title}");
            for key in ["x", "y", "w", "h"] {
                assert!(panel["gridPos"][key].as_u64().is_some(), "{file}: {title} gridPos");
            }
            assert!(!panel["targets"].as_array().unwrap().is_empty(), "{file}: {title} targets");
        }
    }
}

#[test]
fn every_metric_and_label_a_panel_names_is_exported() {
    let (metrics, labels) = (metric_names(), label_names());
    for (file, dashboard) in dashboards() {
        let variables = dashboard["templating"]["list"].as_array().unwrap().iter();
        let definitions = variables.filter_map(|v| v["definition"].as_str().map(str::to_owned));
        let panels = dashboard["panels"].as_array().unwrap().clone();
        let targets = panels.iter().flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_owned();
            p["targets"].as_array().unwrap().iter().map(move |t| (title.clone(), t.clone()))
        });
        let mut expressions: Vec<(String, String, Option<String>)> = targets
            .map(|(title, t)| {
                let legend = t["legendFormat"].as_str().map(str::to_owned);
                (title, t["expr"].as_str().unwrap().to_owned(), legend)
            })
            .collect();
        expressions.extend(definitions.map(|d| ("a variable".to_owned(), d, None)));
        for (title, expr, legend) in expressions {
            let words = identifiers(&expr);
            let named: Vec<&String> = words
                .iter()
                .map(|(w, _)| w)
                .filter(|w| w.starts_with("http_client_") || w.starts_with("egresslens_"))
                .collect();
            assert!(
                named.iter().any(|w| metrics.contains(*w)),
                "{file}: {title}: no exported metric in {expr}"
            );
            for word in named {
                assert!(
                    metrics.contains(word) || labels.contains(word),
                    "{file}: {title}: {word} is neither an exported metric nor a label"
                );
            }
            for label in labels_used(&expr) {
                assert!(labels.contains(&label), "{file}: {title}: unknown label {label}");
            }
            let legend = legend.unwrap_or_default();
            for part in legend.split("{{").skip(1) {
                let label = part.split("}}").next().unwrap().trim();
                assert!(labels.contains(label), "{file}: {title}: legend label {label}");
            }
        }
    }
}

#[test]
fn the_checks_catch_a_wrong_name() {
    // The checks above must be able to fail: a misspelt metric and label are seen.
    let metrics = metric_names();
    let words =
        identifiers(r#"rate(http_client_request_duration_bucket{server_addr="$host"}[5m])"#);
    assert!(!metrics.contains(&words[1].0), "{words:?}");
    let used = labels_used(r#"sum by (le, srv) (rate(x{server_addr="a"}[5m]))"#);
    assert_eq!(used, ["le", "srv", "server_addr"]);
    assert!(!label_names().contains("srv"));
}
