//! The Helm chart (`helm/otg`) and the Dockerfile, checked with the real tools: `helm
//! lint --strict` and `helm template` for every values file under `helm/otg/ci/`, every
//! rendered manifest validated by `kubernetes-validate --strict`, the rendered objects
//! checked, the rendered config loaded by the real gateway, and the gateway started with
//! the chart's environment plus Kubernetes' service links.
//!
//! The tools come from `scripts/install-chart-tools` (helm, kubernetes-validate,
//! hadolint) and `scripts/test` (promtool), found on PATH. Without them the tests are
//! skipped with a note, except in CI, where they fail.

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The Kubernetes release the manifests are validated against: the newest that
/// kubernetes-validate 1.37.0 (pinned in scripts/install-chart-tools) knows.
const KUBERNETES_VERSION: &str = "1.37.0";

/// The kinds whose schemas come with the Prometheus Operator's CRDs, which
/// kubernetes-validate does not have: their structure is checked here instead.
const CUSTOM_RESOURCE_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];

/// A service link variable of each shape Kubernetes injects for a Service named `otg`.
const SERVICE_LINKS: [(&str, &str); 8] = [
    ("OTG_SERVICE_HOST", "10.96.0.12"),
    ("OTG_SERVICE_PORT", "8080"),
    ("OTG_SERVICE_PORT_HTTP", "8080"),
    ("OTG_PORT", "tcp://10.96.0.12:8080"),
    ("OTG_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
    ("OTG_PORT_8080_TCP_ADDR", "10.96.0.12"),
    ("OTG_PORT_8080_TCP_PORT", "8080"),
    ("OTG_PORT_8080_TCP_PROTO", "tcp"),
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

fn chart() -> PathBuf {
    workspace().join("helm/otg")
}

/// The executable `name` on PATH; `None` (with a note) when absent outside CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|dir| dir.join(name))
        .find(|path| path.is_file());
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "{name} is not on PATH: scripts/test installs it");
        eprintln!(
            "{name} is not on PATH: skipped (scripts/install-chart-tools installs it; scripts/test puts it on PATH)"
        );
    }
    found
}

/// Runs `command`, which must succeed; returns its stdout.
fn run(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|error| panic!("{command:?}: {error}"));
    assert!(output.status.success(), "{command:?}: {}\n{}", output.status, text(&output));
    String::from_utf8(output.stdout).unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Every values file under helm/otg/ci/.
fn ci_values_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart().join("ci"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "helm/otg/ci/ holds the embedded, scylla and existingSecret values: {files:?}");
    files
}

/// `helm template` of the chart with `values` and `--set` arguments: its output, or
/// the error helm printed.
fn helm_template(helm: &Path, values: Option<&Path>, set: &[&str]) -> Result<String, String> {
    let mut command = Command::new(helm);
    command.args(["template", "otg", "--namespace", "attendance"]).arg(chart());
    if let Some(values) = values {
        command.arg("--values").arg(values);
    }
    for assignment in set {
        command.args(["--set", assignment]);
    }
    let output = command.output().expect("helm runs");
    match output.status.success() {
        true => Ok(String::from_utf8(output.stdout).unwrap()),
        false => Err(text(&output)),
    }
}

/// The objects of a multi-document YAML stream, as JSON values.
fn objects(manifests: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(manifests)
        .map(|document| serde::Deserialize::deserialize(document).expect("helm renders valid YAML"))
        .filter(|object: &Value| !object.is_null())
        .collect()
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|object| object["kind"] == kind).collect()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap()
}

/// The pod specs of the workloads: gateways and the migration Job.
fn pod_specs(objects: &[Value]) -> Vec<(&str, &Value)> {
    objects
        .iter()
        .filter(|object| ["StatefulSet", "Deployment", "Job"].contains(&object["kind"].as_str().unwrap()))
        .map(|object| (name(object), &object["spec"]["template"]["spec"]))
        .collect()
}

/// The chart rendered with each CI values file: (file, manifests, objects).
fn rendered_ci_charts(helm: &Path) -> Vec<(PathBuf, String, Vec<Value>)> {
    ci_values_files()
        .into_iter()
        .map(|values| {
            let manifests =
                helm_template(helm, Some(&values), &[]).unwrap_or_else(|error| panic!("{values:?}: {error}"));
            let objects = objects(&manifests);
            (values, manifests, objects)
        })
        .collect()
}

#[test]
fn every_ci_values_file_lints_and_every_manifest_validates() {
    let (Some(helm), Some(validate)) = (tool("helm"), tool("kubernetes-validate")) else { return };
    let scratch = tempfile::tempdir().unwrap();
    for (values, manifests, objects) in rendered_ci_charts(&helm) {
        run(Command::new(&helm).args(["lint", "--strict"]).arg(chart()).arg("--values").arg(&values));
        let file = scratch.path().join(values.file_name().unwrap());
        std::fs::write(&file, &manifests).unwrap();
        let report =
            run(Command::new(&validate).args(["--strict", "--kubernetes-version", KUBERNETES_VERSION]).arg(&file));
        for object in &objects {
            let kind = object["kind"].as_str().unwrap();
            let expected = match CUSTOM_RESOURCE_KINDS.contains(&kind) {
                true => format!("Couldn't find schema for kind {kind}"),
                false => format!("passed for resource {}/{}", kind.to_lowercase(), name(object)),
            };
            assert!(report.contains(&expected), "{values:?}: {expected:?} not in\n{report}");
        }
    }
}

#[test]
fn embedded_mode_refuses_more_than_one_replica_and_autoscaling() {
    let Some(helm) = tool("helm") else { return };
    let error = helm_template(&helm, None, &["replicaCount=2"]).unwrap_err();
    assert!(error.contains("replicaCount must be 1 (it is 2)"), "{error}");
    let error = helm_template(&helm, None, &["autoscaling.enabled=true"]).unwrap_err();
    assert!(error.contains("autoscaling.enabled needs store: scylla"), "{error}");
    let error = helm_template(&helm, None, &["store=scylla"]).unwrap_err();
    assert!(error.contains("set auth.adminToken or auth.existingSecret"), "{error}");
    let error = helm_template(&helm, None, &["config.memory_limit_mib=2048"]).unwrap_err();
    assert!(error.contains("must be below resources.limits.memory"), "{error}");
    let error = helm_template(&helm, None, &["lifecycle.terminationGracePeriodSeconds=20"]).unwrap_err();
    assert!(error.contains("killed mid-drain"), "{error}");
    let error = helm_template(&helm, None, &["config.listen_adr=0.0.0.0:80"]).unwrap_err();
    assert!(error.contains("listen_adr"), "the schema refuses unknown settings: {error}");
}

#[test]
fn pods_are_locked_down_probe_real_routes_and_fit_the_drain() {
    let Some(helm) = tool("helm") else { return };
    for (values, _, objects) in rendered_ci_charts(&helm) {
        let settings = gateway_settings(&objects);
        let specs = pod_specs(&objects);
        assert!(!specs.is_empty(), "{values:?}");
        for (workload, spec) in specs {
            let context = format!("{values:?} {workload}");
            assert_eq!(spec["enableServiceLinks"], false, "{context}");
            assert_eq!(spec["automountServiceAccountToken"], false, "{context}");
            assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{context}");
            assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{context}");
            for container in spec["containers"].as_array().unwrap() {
                let security = &container["securityContext"];
                assert_eq!(security["runAsNonRoot"], true, "{context}");
                assert_eq!(security["readOnlyRootFilesystem"], true, "{context}");
                assert_eq!(security["allowPrivilegeEscalation"], false, "{context}");
                assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]), "{context}");
                assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault", "{context}");
            }
        }
        let gateway = gateway_pod(&objects);
        let container = &gateway["spec"]["containers"][0];
        for (probe, route) in
            [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
        {
            assert_eq!(container[probe]["httpGet"]["path"], route, "{values:?} {probe}");
            assert_eq!(container[probe]["httpGet"]["port"], "http", "{values:?} {probe}");
        }
        let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"].as_u64().unwrap();
        let grace = gateway["spec"]["terminationGracePeriodSeconds"].as_u64().unwrap();
        let drain = settings["shutdown_timeout_s"].as_integer().unwrap() as u64;
        assert!(grace > pre_stop + drain, "{values:?}: grace {grace} s, preStop {pre_stop} s, drain {drain} s");
        assert!(gateway["metadata"]["annotations"]["checksum/config"].is_string(), "{values:?}");
    }
}

#[test]
fn scylla_mode_runs_migrate_as_a_hook_before_the_gateways() {
    let Some(helm) = tool("helm") else { return };
    for (values, _, objects) in rendered_ci_charts(&helm) {
        let jobs = of_kind(&objects, "Job");
        let deployments = of_kind(&objects, "Deployment");
        if gateway_settings(&objects)["store"].as_str() == Some("embedded") {
            assert!(jobs.is_empty() && deployments.is_empty(), "{values:?}: embedded mode is one StatefulSet");
            assert_eq!(of_kind(&objects, "StatefulSet")[0]["spec"]["replicas"], 1, "{values:?}");
            continue;
        }
        let [job] = jobs[..] else { panic!("{values:?}: one migrate Job, not {}", jobs.len()) };
        assert_eq!(job["metadata"]["annotations"]["helm.sh/hook"], "pre-install,pre-upgrade", "{values:?}");
        let arguments = &job["spec"]["template"]["spec"]["containers"][0]["args"];
        assert_eq!(arguments.as_array().unwrap().last().unwrap(), "migrate", "{values:?}");
        // What the Job reads must exist when it runs: hooks too, created before it.
        let volume = &job["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"];
        let config_map = of_kind(&objects, "ConfigMap").into_iter().find(|map| name(map) == volume).unwrap();
        assert_eq!(config_map["metadata"]["annotations"]["helm.sh/hook"], "pre-install,pre-upgrade", "{values:?}");
        assert_eq!(deployments.len(), 1, "{values:?}");
    }
}

#[test]
fn custom_resources_have_their_structure_and_real_metric_names() {
    let (Some(helm), Some(promtool)) = (tool("helm"), tool("promtool")) else { return };
    let full = chart().join("ci/scylla-full-values.yaml");
    let objects = objects(&helm_template(&helm, Some(&full), &[]).unwrap());
    let service = of_kind(&objects, "Service").into_iter().find(|service| name(service) == "otg").unwrap();

    let [monitor] = of_kind(&objects, "ServiceMonitor")[..] else { panic!("one ServiceMonitor") };
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!((&endpoint["port"], &endpoint["path"]), (&"http".into(), &"/metrics".into()));
    assert_eq!(service["spec"]["ports"][0]["name"], "http");
    for (label, value) in monitor["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&service["metadata"]["labels"][label], value, "the ServiceMonitor selects the Service");
    }

    let [rule] = of_kind(&objects, "PrometheusRule")[..] else { panic!("one PrometheusRule") };
    let groups = &rule["spec"]["groups"];
    let alerts: BTreeSet<&str> =
        groups[0]["rules"].as_array().unwrap().iter().map(|r| r["alert"].as_str().unwrap()).collect();
    for alert in ["OtgGatewayNotReady", "OtgHigh503Ratio", "OtgStoreCommitLatencyHigh", "OtgStormBacklogNotDraining"] {
        assert!(alerts.contains(alert), "{alert} in {alerts:?}");
    }
    let rules_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(rules_file.path(), serde_json::json!({ "groups": groups }).to_string()).unwrap();
    run(Command::new(promtool).args(["check", "rules"]).arg(rules_file.path()));

    let [dashboard] =
        of_kind(&objects, "ConfigMap").into_iter().filter(|map| name(map) == "otg-dashboard").collect::<Vec<_>>()[..]
    else {
        panic!("one dashboard ConfigMap")
    };
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard_json = dashboard["data"]["otg-gateway.json"].as_str().unwrap();
    let panels = serde_json::from_str::<Value>(dashboard_json).unwrap()["panels"].as_array().unwrap().len();
    assert!(panels >= 10, "{panels} panels");

    let registered = registered_metric_names();
    for (source, text) in [("PrometheusRule", groups.to_string()), ("dashboard", dashboard_json.to_owned())] {
        let used = metric_names_in(&text);
        assert!(used.len() >= 5, "{source}: {used:?}");
        for metric in used {
            assert!(registered.contains(&metric), "{source} uses {metric}, which no metrics.rs registers");
        }
    }
}

/// The `otg_*` metric names a query uses, histograms by their family's name.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (start, _) in text.match_indices("otg_") {
        let name: String =
            text[start..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        let family = ["_bucket", "_sum", "_count"].iter().find_map(|suffix| name.strip_suffix(suffix));
        names.insert(family.unwrap_or(&name).to_owned());
    }
    names
}

/// Every metric name the gateway and the actors register: each is a string literal.
fn registered_metric_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut folders = vec![workspace().join("gateway/src"), workspace().join("actors/src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(folder).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                folders.push(path);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let source = std::fs::read_to_string(&path).unwrap();
                names.extend(source.split('"').filter(|literal| literal.starts_with("otg_")).map(String::from));
            }
        }
    }
    names
}

/// The gateway's pod template: of the StatefulSet or the Deployment.
fn gateway_pod(objects: &[Value]) -> &Value {
    let workloads: Vec<&Value> =
        objects.iter().filter(|object| object["kind"] == "StatefulSet" || object["kind"] == "Deployment").collect();
    let [workload] = workloads[..] else { panic!("one gateway workload, not {}", workloads.len()) };
    &workload["spec"]["template"]
}

/// The TOML of the gateways' ConfigMap.
fn rendered_config(objects: &[Value]) -> &str {
    let gateway = gateway_pod(objects);
    let volumes = gateway["spec"]["volumes"].as_array().unwrap();
    let config_map = volumes.iter().find(|volume| volume["name"] == "config").unwrap()["configMap"]["name"].as_str();
    let config_map =
        of_kind(objects, "ConfigMap").into_iter().find(|map| map["metadata"]["name"].as_str() == config_map);
    config_map.expect("the gateway's ConfigMap is rendered")["data"]["otg.toml"].as_str().unwrap()
}

fn gateway_settings(objects: &[Value]) -> toml::Table {
    rendered_config(objects).parse().expect("the rendered config is TOML")
}

/// The environment the chart gives the gateway container, secrets resolved from the
/// rendered Secret (an existingSecret is not rendered: a stand-in token is used).
fn rendered_environment(objects: &[Value]) -> Vec<(String, String)> {
    let container = &gateway_pod(objects)["spec"]["containers"][0];
    let environment = container["env"].as_array().map(Vec::as_slice).unwrap_or_default();
    environment
        .iter()
        .map(|variable| {
            let value = match &variable["valueFrom"]["secretKeyRef"] {
                Value::Null => variable["value"].as_str().unwrap().to_owned(),
                reference => secret_value(objects, reference),
            };
            (variable["name"].as_str().unwrap().to_owned(), value)
        })
        .collect()
}

fn secret_value(objects: &[Value], reference: &Value) -> String {
    let secret = of_kind(objects, "Secret").into_iter().find(|secret| secret["metadata"]["name"] == reference["name"]);
    let Some(secret) = secret else { return "stand-in-for-an-existing-secret".into() };
    let encoded = secret["data"][reference["key"].as_str().unwrap()].as_str().unwrap();
    let decoded = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encoded).unwrap();
    String::from_utf8(decoded).unwrap()
}

#[test]
fn the_gateway_accepts_every_rendered_config() {
    let Some(helm) = tool("helm") else { return };
    let scratch = tempfile::tempdir().unwrap();
    for (values, _, objects) in rendered_ci_charts(&helm) {
        let file = scratch.path().join("otg.toml");
        std::fs::write(&file, rendered_config(&objects)).unwrap();
        let summary = run(Command::new(env!("CARGO_BIN_EXE_otg-gateway"))
            .arg("--config")
            .arg(&file)
            .arg("check-config")
            .envs(rendered_environment(&objects))
            .envs(SERVICE_LINKS));
        assert!(summary.contains("the configuration is valid"), "{values:?}: {summary}");
        for (variable, value) in rendered_environment(&objects) {
            assert!(!summary.contains(&value), "{values:?}: check-config printed {variable}");
        }
    }
}

#[test]
fn the_values_schema_lists_every_gateway_setting() {
    let summary = run(Command::new(env!("CARGO_BIN_EXE_otg-gateway")).arg("check-config").env("OTG_LOG", "warn"));
    let defaults: toml::Table = summary.parse().expect("check-config prints TOML");
    let mut settings: BTreeSet<&str> = defaults.keys().map(String::as_str).collect();
    settings.insert("scylla_local_datacenter"); // unset by default, so not printed
    for chart_owned in ["listen_addr", "store", "data_dir"] {
        settings.remove(chart_owned);
    }
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart().join("values.schema.json")).unwrap()).unwrap();
    let listed: BTreeSet<&str> =
        schema["properties"]["config"]["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(listed, settings, "helm/otg/values.schema.json's config must list every setting the chart leaves open");
}

#[test]
fn the_chart_readme_lists_every_value() {
    let values: Value = serde_norway::from_str(&std::fs::read_to_string(chart().join("values.yaml")).unwrap()).unwrap();
    let readme = std::fs::read_to_string(chart().join("README.md")).unwrap();
    let mut paths = Vec::new();
    value_paths(&values, String::new(), &mut paths);
    for path in paths {
        assert!(readme.contains(&format!("| `{path}` |")), "helm/otg/README.md has no row for `{path}`");
    }
}

/// The dotted paths of `value`'s leaves (an empty map or a list is a leaf).
fn value_paths(value: &Value, prefix: String, paths: &mut Vec<String>) {
    match value.as_object().filter(|map| !map.is_empty()) {
        Some(map) => {
            for (key, child) in map {
                let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                value_paths(child, path, paths);
            }
        }
        None => paths.push(prefix),
    }
}

#[test]
fn the_gateway_starts_with_the_charts_environment_and_service_links() {
    let Some(helm) = tool("helm") else { return };
    let embedded = chart().join("ci/embedded-values.yaml");
    let token = "chart-admin-token-0123456789";
    let objects = objects(&helm_template(&helm, Some(&embedded), &[&format!("auth.adminToken={token}")]).unwrap());
    let environment = rendered_environment(&objects);
    assert_eq!(environment, [("OTG_ADMIN_TOKEN".to_owned(), token.to_owned())]);
    let scratch = tempfile::tempdir().unwrap();
    let config = scratch.path().join("otg.toml");
    std::fs::write(&config, rendered_config(&objects)).unwrap();

    // The pod's address (0.0.0.0:8080) and volume (/data) are the only settings this
    // machine cannot give it: the environment overrides them, as it overrides the file.
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_otg-gateway"))
        .arg("--config")
        .arg(&config)
        .envs(environment)
        .envs(SERVICE_LINKS)
        .env("OTG_LISTEN_ADDR", "127.0.0.1:0")
        .env("OTG_DATA_DIR", scratch.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the gateway starts");
    let base_url = listening_address(&mut gateway);
    let ready = support::eventually(Duration::from_secs(20), || {
        ureq::get(&format!("{base_url}/readyz")).call().is_ok_and(|reply| reply.status() == 200)
    });
    assert!(ready, "the gateway became ready on {base_url}/readyz");
    assert_eq!(ureq::get(&format!("{base_url}/healthz")).call().unwrap().status(), 200);
    let admin = ureq::get(&format!("{base_url}/v1/admin/sync-status?org_id=acme"))
        .set("Authorization", &format!("Bearer {token}"))
        .call();
    assert!(admin.is_ok(), "the admin token from the chart's Secret works: {admin:?}");

    unsafe { libc::kill(gateway.id() as i32, libc::SIGTERM) };
    let status = gateway.wait().unwrap();
    let mut logs = String::new();
    std::io::Read::read_to_string(&mut gateway.stderr.take().unwrap(), &mut logs).unwrap();
    assert!(status.success(), "SIGTERM drains and exits 0: {status}\n{logs}");
    let first_line: Value = serde_json::from_str(logs.lines().next().unwrap_or_default())
        .unwrap_or_else(|_| panic!("log_format json writes JSON lines:\n{logs}"));
    assert_eq!(first_line["message"], "ignoring Kubernetes service links: they are not settings", "{logs}");
}

/// Reads the gateway's stdout until it prints its address, and keeps draining it.
fn listening_address(gateway: &mut std::process::Child) -> String {
    let mut lines = BufReader::new(gateway.stdout.take().unwrap()).lines();
    let address = loop {
        let line = lines.next().expect("the gateway prints its address").unwrap();
        if let Some(url) = line.strip_prefix("otg-gateway listening on ") {
            break url.to_owned();
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    address
}

#[test]
fn the_dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint") else { return };
    run(Command::new(hadolint).arg(workspace().join("Dockerfile")));
}
