//! The Kubernetes install as a platform engineer runs it: `deploy/new-secrets.sh`
//! makes the secrets, `kubectl kustomize` renders every overlay, every
//! built-in object passes Kubernetes' own schemas strictly (unknown fields
//! are errors) for the oldest and newest supported versions, every pod spec
//! passes the `restricted` Pod Security checks, and the controller starts
//! from the rendered Deployment's arguments and Secret with no edit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use dimmer_e2e::controller::dimmer_binary;
use dimmer_e2e::etcd::Etcd;
use dimmer_e2e::paths::workspace_root;
use dimmer_e2e::ports::free_port;
use serde::Deserialize;
use serde_json::Value;

/// Kubernetes versions the manifests are checked against: the oldest
/// supported and the newest.
const KUBERNETES: [&str; 2] = ["1.27.0", "1.37.0"];

/// The overlays a user applies, and the kinds each renders.
const OVERLAYS: [(&str, &[&str]); 6] = [
    (
        "overlays/single",
        &[
            "Namespace",
            "Secret",
            "Service",
            "PersistentVolumeClaim",
            "Deployment",
        ],
    ),
    (
        "overlays/fleet",
        &[
            "Namespace",
            "Secret",
            "Service",
            "Deployment",
            "PodDisruptionBudget",
        ],
    ),
    ("overlays/istio", &["WasmPlugin"]),
    ("overlays/istio-envoyfilter", &["EnvoyFilter"]),
    ("envoy-gateway", &["EnvoyExtensionPolicy"]),
    (
        "prometheus-operator",
        &["ServiceMonitor", "PrometheusRule", "ConfigMap"],
    ),
];

/// A copy of `deploy/`, so that the secrets the script writes stay in the test.
fn copy_deploy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap().flatten() {
            let (src, dst) = (e.path(), to.join(e.file_name()));
            if src.is_dir() {
                copy(&src, &dst);
            } else {
                std::fs::copy(&src, &dst).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&workspace_root().join("deploy"), dir.path());
    // A copy made from a working tree that ran the script holds its secrets:
    // this test makes its own.
    let secrets = dir.path().join("secrets");
    for f in [
        "tokens.yaml",
        "audit.key",
        "viewer-token",
        "proxy-token",
        "filter-token/token.yaml",
        "envoyfilter/envoyfilter.yaml",
    ] {
        let _ = std::fs::remove_file(secrets.join(f));
    }
    dir
}

/// `make oci` pins what it built: the rendered Istio and Envoy Gateway
/// manifests then name the module by the digest it printed.
#[test]
fn make_oci_pins_the_module_it_built_by_digest() {
    let deploy = copy_deploy();
    let d = deploy.path();
    assert!(new_secrets(d).status.success());
    let layout = tempfile::tempdir().unwrap();
    let bin = dimmer_binary().unwrap().with_file_name("dimmer-oci");
    let out = Command::new(&bin)
        .arg("--out")
        .arg(layout.path().join("dimmer-filter"))
        .arg("--deploy")
        .arg(d)
        .args(["--repository", "registry.test/team/dimmer-filter"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = said
        .lines()
        .find_map(|l| l.strip_prefix("digest "))
        .unwrap()
        .to_owned();
    let (_, istio) = kustomize(d, "overlays/istio").unwrap();
    let plugin = of_kind(&istio, "WasmPlugin");
    assert_eq!(
        plugin["spec"]["url"],
        format!("oci://registry.test/team/dimmer-filter@{digest}")
    );
    assert_eq!(
        plugin["spec"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    let (_, gateway) = kustomize(d, "envoy-gateway").unwrap();
    assert_eq!(
        of_kind(&gateway, "EnvoyExtensionPolicy")["spec"]["wasm"][0]["code"]["image"]["url"],
        format!("registry.test/team/dimmer-filter@{digest}")
    );
}

fn new_secrets(deploy: &Path) -> std::process::Output {
    let bin = dimmer_binary().unwrap();
    Command::new(deploy.join("new-secrets.sh"))
        .env("DIMMER", bin)
        .output()
        .unwrap()
}

fn kustomize(deploy: &Path, overlay: &str) -> Result<(String, Vec<Value>), String> {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy.join(overlay))
        .output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_norway::Value::deserialize(d).unwrap()).unwrap())
        .collect();
    Ok((text, docs))
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

fn validator() -> PathBuf {
    workspace_root().join(".venv/bin/kubernetes-validate")
}

/// Asserts the rendered `text` of `overlay` passes Kubernetes' schemas for
/// the oldest and newest version and the CRD schemas, strictly (unknown
/// fields refused); returns what the CRD check said.
fn passes_schemas(d: &Path, overlay: &str, text: &str) -> (bool, String) {
    let file = d.join(format!("{}.rendered.yaml", overlay.replace('/', "-")));
    std::fs::write(&file, text).unwrap();
    for version in KUBERNETES {
        let v = Command::new(validator())
            .args(["--strict", "--quiet", "-k", version])
            .arg(&file)
            .output()
            .unwrap();
        let said =
            String::from_utf8_lossy(&v.stdout).into_owned() + &String::from_utf8_lossy(&v.stderr);
        assert!(
            v.status.success() && !said.contains("ERROR"),
            "{overlay} against {version}:\n{said}"
        );
    }
    // Istio's and prometheus-operator's kinds against their CRDs, strictly.
    let crds = check_crds(&file);
    assert!(crds.0, "{overlay}:\n{}", crds.1);
    // Envoy Gateway's and two more generations of Istio's, as TypeScript
    // models: everything passes but the WasmPlugin against the Istio
    // before 1.20, which must refuse its `failStrategy` (docs/istio.md:
    // older releases take the EnvoyFilter, which passes there).
    let (_, said) = check_models(&file);
    for line in said.lines().filter(|l| l.contains(" against ")) {
        let older_wasm = line.starts_with("WasmPlugin ") && line.contains("istio 2.3.0");
        if older_wasm {
            assert!(
                said.contains("'\"failStrategy\"' does not exist"),
                "{overlay}: the Istio before 1.20 must refuse failStrategy:\n{said}"
            );
        } else {
            assert!(line.ends_with(": ok"), "{overlay}:\n{said}");
        }
    }
    crds
}

/// `tests/models/check.mjs FILE`: (passed, what it said).
fn check_models(file: &Path) -> (bool, String) {
    run_check(Command::new("node"), "tests/models/check.mjs", file)
}

/// `program SCRIPT FILE`, the script in the workspace: (passed, what it said).
fn run_check(mut program: Command, script: &str, file: &Path) -> (bool, String) {
    let out = program
        .arg(workspace_root().join(script))
        .arg(file)
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

/// What each overlay's objects must say against the TypeScript models.
const MODEL_CHECKS: [(&str, &[&str]); 4] = [
    (
        "overlays/istio",
        &[
            "WasmPlugin dimmer against @kubernetes-models/istio 3.0.1: ok",
            "WasmPlugin dimmer against @kubernetes-models/istio 2.3.0:",
        ],
    ),
    (
        "overlays/istio-envoyfilter",
        &[
            "EnvoyFilter dimmer against @kubernetes-models/istio 2.3.0: ok",
            "EnvoyFilter dimmer against @kubernetes-models/istio 3.0.1: ok",
        ],
    ),
    (
        "envoy-gateway",
        &["EnvoyExtensionPolicy dimmer against @kubernetes-models/envoy-gateway 2.0.0: ok"],
    ),
    ("overlays/fleet", &["Deployment dimmer: no model here"]),
];

/// Every image and Wasm module a rendered tree names by tag rather than by
/// digest, as `KIND NAME: where = reference`.
fn unpinned(docs: &[Value]) -> Vec<String> {
    let mut out = Vec::new();
    let pinned = |r: &str| r.contains("@sha256:");
    for d in docs {
        let (kind, name) = (
            d["kind"].as_str().unwrap_or(""),
            d["metadata"]["name"].as_str().unwrap_or(""),
        );
        let spec = &d["spec"];
        let mut refs: Vec<(String, &Value)> = Vec::new();
        for c in spec["template"]["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
        {
            refs.push((format!("container {}", c["name"]), &c["image"]));
        }
        if kind == "WasmPlugin" {
            refs.push(("url".into(), &spec["url"]));
        }
        for (i, w) in spec["wasm"].as_array().into_iter().flatten().enumerate() {
            refs.push((format!("wasm[{i}]"), &w["code"]["image"]["url"]));
        }
        for (at, r) in refs {
            let r = r.as_str().unwrap_or("");
            if !pinned(r) {
                out.push(format!("{kind} {name}: {at} = {r}"));
            }
        }
    }
    out
}

/// Kinds `scripts/check-crds.py` holds to their upstream CRD schema.
const CRD_KINDS: [&str; 5] = [
    "WasmPlugin",
    "EnvoyFilter",
    "PeerAuthentication",
    "ServiceMonitor",
    "PrometheusRule",
];

/// `scripts/check-crds.py FILE` with the project's venv: (passed, what it said).
fn check_crds(file: &Path) -> (bool, String) {
    let python = Command::new(workspace_root().join(".venv/bin/python"));
    run_check(python, "scripts/check-crds.py", file)
}

/// What keeps a pod spec out of the `restricted` Pod Security level (the
/// checks of its current version), or nothing.
fn restricted(pod: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let pod_sc = &pod["securityContext"];
    if pod["hostNetwork"] == true || pod["hostPID"] == true || pod["hostIPC"] == true {
        bad.push("host namespaces".into());
    }
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let kinds: Vec<&String> = v
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| *k != "name")
            .collect();
        let allowed = [
            "configMap",
            "secret",
            "persistentVolumeClaim",
            "emptyDir",
            "projected",
            "downwardAPI",
        ];
        if !kinds.iter().all(|k| allowed.contains(&k.as_str())) {
            bad.push(format!("volume {v}"));
        }
    }
    for c in pod["containers"].as_array().into_iter().flatten() {
        let sc = &c["securityContext"];
        let name = c["name"].as_str().unwrap_or_default();
        if sc["allowPrivilegeEscalation"] != false {
            bad.push(format!("{name}: allowPrivilegeEscalation must be false"));
        }
        if sc["privileged"] == true {
            bad.push(format!("{name}: privileged"));
        }
        let drops = sc["capabilities"]["drop"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if !drops.iter().any(|d| d == "ALL") {
            bad.push(format!("{name}: capabilities must drop ALL"));
        }
        if sc["capabilities"]["add"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x != "NET_BIND_SERVICE"))
        {
            bad.push(format!("{name}: adds capabilities"));
        }
        if sc["runAsNonRoot"] != true && pod_sc["runAsNonRoot"] != true {
            bad.push(format!("{name}: runAsNonRoot"));
        }
        if sc["runAsUser"] == 0 || pod_sc["runAsUser"] == 0 {
            bad.push(format!("{name}: runs as user 0"));
        }
        let seccomp = |s: &Value| s["seccompProfile"]["type"].as_str().map(str::to_owned);
        let profile = seccomp(sc).or_else(|| seccomp(pod_sc)).unwrap_or_default();
        if profile != "RuntimeDefault" && profile != "Localhost" {
            bad.push(format!("{name}: seccomp {profile:?}"));
        }
        for p in c["ports"].as_array().into_iter().flatten() {
            if p.get("hostPort").is_some() {
                bad.push(format!("{name}: hostPort"));
            }
        }
        // Not in `restricted`, but what a platform team asks of every pod.
        if c["resources"]["requests"]["memory"].is_null()
            || c["resources"]["limits"]["memory"].is_null()
        {
            bad.push(format!("{name}: memory request and limit"));
        }
        if sc["readOnlyRootFilesystem"] != true {
            bad.push(format!("{name}: readOnlyRootFilesystem"));
        }
    }
    bad
}

#[test]
fn every_overlay_renders_and_passes_kubernetes_schemas_strictly() {
    let deploy = copy_deploy();
    let d = deploy.path();
    let out = new_secrets(d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tokens = std::fs::read_to_string(d.join("secrets/tokens.yaml")).unwrap();
    let proxy = std::fs::read_to_string(d.join("secrets/proxy-token")).unwrap();
    // The Secret's tokens file holds digests, never a token.
    assert!(
        !tokens.contains(&proxy) && tokens.matches("sha256:").count() == 4,
        "{tokens}"
    );
    for (overlay, want) in MODEL_CHECKS {
        let (text, _) = kustomize(d, overlay).unwrap_or_else(|e| panic!("{overlay}: {e}"));
        let file = d.join("models.yaml");
        std::fs::write(&file, text).unwrap();
        let (_, said) = check_models(&file);
        for line in want {
            assert!(said.contains(line), "{overlay}: no {line:?} in\n{said}");
        }
    }
    for (overlay, kinds) in OVERLAYS {
        let (text, docs) = kustomize(d, overlay).unwrap_or_else(|e| panic!("{overlay}: {e}"));
        let rendered: Vec<&str> = docs.iter().filter_map(|x| x["kind"].as_str()).collect();
        let mut want = kinds.to_vec();
        want.sort_unstable();
        let mut got = rendered.clone();
        got.sort_unstable();
        assert_eq!(got, want, "{overlay}");
        let crds = passes_schemas(d, overlay, &text);
        for kind in kinds.iter().filter(|k| CRD_KINDS.contains(k)) {
            assert!(
                crds.1.contains(&format!("{kind} dimmer: ok")),
                "{overlay}: {}",
                crds.1
            );
        }
        for doc in &docs {
            if doc["kind"] == "Deployment" {
                let pod = &doc["spec"]["template"]["spec"];
                assert_eq!(restricted(pod), Vec::<String>::new(), "{overlay}");
            }
        }
    }
    // The filter polls with the Secret's own proxy token, on the client side,
    // in the WasmPlugin and in the EnvoyFilter alternative alike.
    let (_, istio) = kustomize(d, "overlays/istio").unwrap();
    let plugin = of_kind(&istio, "WasmPlugin");
    assert_eq!(
        plugin["spec"]["pluginConfig"]["controller"]["token"],
        proxy.as_str()
    );
    let (_, envoyfilter) = kustomize(d, "overlays/istio-envoyfilter").unwrap();
    let patch = &of_kind(&envoyfilter, "EnvoyFilter")["spec"]["configPatches"][0];
    assert_eq!(patch["match"]["context"], "SIDECAR_OUTBOUND");
    let config: Value = serde_json::from_str(
        patch["patch"]["value"]["typed_config"]["config"]["configuration"]["value"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config["controller"]["token"], proxy.as_str());
    // The module by digest, the same in the URL and in Istio's check.
    let url = plugin["spec"]["url"].as_str().unwrap();
    let hex = plugin["spec"]["sha256"].as_str().unwrap();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hex}"
    );
    assert!(url.ends_with(&format!("@sha256:{hex}")), "{url}");
    let (_, gateway) = kustomize(d, "envoy-gateway").unwrap();
    let image =
        &of_kind(&gateway, "EnvoyExtensionPolicy")["spec"]["wasm"][0]["code"]["image"]["url"];
    assert!(
        image.as_str().unwrap().ends_with(&format!("@sha256:{hex}")),
        "{image}"
    );
    assert_eq!(
        plugin["spec"]["match"],
        serde_json::json!([{"mode": "CLIENT"}])
    );
    // The generated prometheus-operator objects match their sources.
    let check = Command::new("python3")
        .arg(workspace_root().join("deploy/prometheus-operator/render.py"))
        .arg("--check")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn a_strict_check_that_can_fail_and_missing_secrets_named() {
    let deploy = copy_deploy();
    let d = deploy.path();
    // Before the script: the overlay names the file it lacks.
    let err = kustomize(d, "overlays/single").unwrap_err();
    assert!(
        err.contains("tokens.yaml") && err.contains("no such file"),
        "{err}"
    );
    assert!(new_secrets(d).status.success());
    // The script never replaces an audit key by accident.
    let again = new_secrets(d);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("audit key must outlive"));
    // The schema check catches an unknown field.
    let (text, _) = kustomize(d, "overlays/fleet").unwrap();
    let bad = d.join("bad.yaml");
    std::fs::write(
        &bad,
        text.replacen("  replicas: 3", "  replicas: 3\n  replicaz: 2", 1),
    )
    .unwrap();
    let v = Command::new(validator())
        .args(["--strict", "--quiet", "-k", KUBERNETES[1]])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!v.status.success());
    assert!(String::from_utf8_lossy(&v.stdout).contains("'replicaz' was unexpected"));
    // A module by tag (the digest patch gone) is named.
    // (A patch that changes nothing: what a tree without `make oci` pulls.)
    std::fs::write(
        d.join("overlays/istio/wasm-digest.yaml"),
        "- op: test\n  path: /kind\n  value: WasmPlugin\n",
    )
    .unwrap();
    let (_, docs) = kustomize(d, "overlays/istio").unwrap();
    assert_eq!(
        unpinned(&docs),
        ["WasmPlugin dimmer: url = oci://registry.example.com/dimmer-filter:0.1.0"]
    );
    std::fs::copy(
        workspace_root().join("deploy/overlays/istio/wasm-digest.yaml"),
        d.join("overlays/istio/wasm-digest.yaml"),
    )
    .unwrap();
    // The CRD check catches an unknown field too, naming where it is.
    let (text, _) = kustomize(d, "overlays/istio").unwrap();
    let bad = d.join("bad-istio.yaml");
    std::fs::write(
        &bad,
        text.replacen("  phase: STATS", "  phase: STATS\n  phaze: AUTHN", 1),
    )
    .unwrap();
    let (ok, said) = check_crds(&bad);
    assert!(!ok && said.contains("spec.phaze: unknown field"), "{said}");
    // So do the TypeScript models, for Istio and for Envoy Gateway, and a
    // value outside an enum.
    let (ok, said) = check_models(&bad);
    assert!(
        !ok && said.contains("'\"phaze\"' does not exist") && said.contains("at: \"phaze\""),
        "{said}"
    );
    let (text, _) = kustomize(d, "envoy-gateway").unwrap();
    for (from, to, says) in [
        (
            "    failOpen: true",
            "    failOpen: true\n    failClosed: false",
            "'\"failClosed\"' does not exist",
        ),
        (
            "      type: Image",
            "      type: Imaeg",
            "Type '\"Imaeg\"' is not assignable",
        ),
    ] {
        assert!(text.contains(from), "{from} in\n{text}");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        let (ok, said) = check_models(&bad);
        assert!(!ok && said.contains(says), "{to}: {said}");
    }
    // And the Pod Security check a privileged container.
    let pod =
        serde_json::json!({"containers": [{"name": "x", "securityContext": {"privileged": true}}]});
    assert!(restricted(&pod).iter().any(|p| p.contains("privileged")));
}

/// The rendered Secret's files, decoded.
fn secret_files(docs: &[Value]) -> BTreeMap<String, Vec<u8>> {
    secret_named(docs, "dimmer-secrets")
}

/// The files of the rendered Secret `name`, decoded.
fn secret_named(docs: &[Value], name: &str) -> BTreeMap<String, Vec<u8>> {
    let secret = docs
        .iter()
        .find(|d| d["kind"] == "Secret" && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no Secret {name}"));
    secret["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            // Long values are folded over lines.
            let text: String = v.as_str().unwrap().split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap();
            (k.clone(), bytes)
        })
        .collect()
}

/// Starts `dimmer serve` with a rendered Deployment's arguments: the
/// Secret's files where it mounts them, state under `dir`, `$(POD_IP)` as
/// the kubelet expands it, and the store and listen address moved here.
fn start_rendered(
    docs: &[Value],
    dir: &Path,
    port: u16,
    store: Option<&str>,
) -> (Child, Vec<String>) {
    let deployment = of_kind(docs, "Deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    // Mount the Secret's items where the Deployment says.
    let mut mounts = BTreeMap::new();
    for m in container["volumeMounts"].as_array().into_iter().flatten() {
        mounts.insert(
            m["name"].as_str().unwrap().to_owned(),
            m["mountPath"].as_str().unwrap().to_owned(),
        );
    }
    let mut moved: Vec<(String, PathBuf)> = Vec::new();
    for v in pod["volumes"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap();
        let at = dir.join(name);
        std::fs::create_dir_all(&at).unwrap();
        if let Some(items) = v["secret"]["items"].as_array() {
            let files = secret_named(docs, v["secret"]["secretName"].as_str().unwrap());
            for i in items {
                let key = i["key"].as_str().unwrap();
                let bytes = files
                    .get(key)
                    .unwrap_or_else(|| panic!("the Secret has no key {key}"));
                std::fs::write(at.join(i["path"].as_str().unwrap()), bytes).unwrap();
            }
        }
        moved.push((mounts[name].clone(), at));
    }
    // The longest mount path first: /etc/dimmer-tls is not /etc/dimmer's.
    moved.sort_by_key(|(from, _)| std::cmp::Reverse(from.len()));
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut a = a.as_str().unwrap().replace("$(POD_IP)", "127.0.0.1");
            for (from, to) in &moved {
                a = a.replace(from.as_str(), &to.display().to_string());
            }
            match a.split_once('=') {
                Some(("--listen", _)) => format!("--listen=127.0.0.1:{port}"),
                Some(("--advertise", _)) => format!("--advertise=http://127.0.0.1:{port}"),
                Some(("--store", _)) => format!("--store={}", store.unwrap_or_default()),
                _ => a,
            }
        })
        .collect();
    let child = Command::new(dimmer_binary().unwrap())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, args)
}

async fn answers(child: &mut Child, args: &[String], url: &str, path: &str, token: &str) -> u16 {
    answers_with(&reqwest::Client::new(), child, args, url, path, token).await
}

async fn answers_with(
    http: &reqwest::Client,
    child: &mut Child,
    args: &[String],
    url: &str,
    path: &str,
    token: &str,
) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("dimmer {args:?} exited ({status}):\n{err}");
        }
        if let Ok(r) = http
            .get(format!("{url}{path}"))
            .bearer_auth(token)
            .send()
            .await
        {
            if r.status() != 503 || Instant::now() > deadline {
                return r.status().as_u16();
            }
        }
        assert!(Instant::now() < deadline, "no answer on {url}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_controller_starts_from_the_rendered_single_and_fleet_overlays() {
    let deploy = copy_deploy();
    let d = deploy.path();
    assert!(new_secrets(d).status.success());
    let files = |docs: &[Value], k: &str| String::from_utf8(secret_files(docs)[k].clone()).unwrap();
    let etcd = Etcd::start(1).await.unwrap();
    for (overlay, store) in [
        ("overlays/single", None),
        ("overlays/fleet", Some(etcd.store_url())),
    ] {
        let (_, docs) = kustomize(d, overlay).unwrap();
        let state = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let (mut child, args) = start_rendered(&docs, state.path(), port, store.as_deref());
        let url = format!("http://127.0.0.1:{port}");
        let tokens = files(&docs, "tokens.yaml");
        assert_eq!(
            answers(&mut child, &args, &url, "/healthz", "").await,
            200,
            "{overlay}"
        );
        assert_eq!(
            answers(&mut child, &args, &url, "/livez", "").await,
            200,
            "{overlay}"
        );
        // Every role's token from the rendered Secret works for its role.
        let viewer = files(&docs, "viewer-token");
        assert_eq!(
            answers(&mut child, &args, &url, "/metrics", &viewer).await,
            200,
            "{overlay}"
        );
        let proxy = files(&docs, "proxy-token");
        assert!(!tokens.contains(&proxy), "{tokens}");
        assert_eq!(
            answers(&mut child, &args, &url, "/v1/config", &proxy).await,
            200,
            "{overlay}"
        );
        let operator = std::fs::read_to_string(d.join("secrets/operator-token")).unwrap();
        assert_eq!(
            answers(&mut child, &args, &url, "/v1/rollouts", &operator).await,
            200,
            "{overlay}"
        );
        // A proxy's token is not an operator's.
        assert_eq!(
            answers(&mut child, &args, &url, "/v1/rollouts", &proxy).await,
            403,
            "{overlay}"
        );
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The TLS and mesh components, composed as a platform team would: the
/// rendered objects pass the same strict checks, and the controller starts
/// from `single` + `tls` serving HTTPS with the Secret's certificate.
#[tokio::test(flavor = "multi_thread")]
async fn the_tls_and_mesh_components_compose_with_the_overlays() {
    let deploy = copy_deploy();
    let d = deploy.path();
    assert!(new_secrets(d).status.success());
    let certs = dimmer_e2e::tls::TestCerts::new(d).unwrap();
    let single_tls = d.join("overlays/single-tls");
    std::fs::create_dir_all(&single_tls).unwrap();
    std::fs::copy(&certs.cert, single_tls.join("tls.crt")).unwrap();
    std::fs::copy(&certs.key, single_tls.join("tls.key")).unwrap();
    std::fs::write(
        single_tls.join("kustomization.yaml"),
        "resources: [../single]\ncomponents: [../../components/tls]\n\
         generatorOptions: {disableNameSuffixHash: true}\n\
         secretGenerator:\n- {name: dimmer-tls, namespace: dimmer-system, type: kubernetes.io/tls, files: [tls.crt, tls.key]}\n",
    )
    .unwrap();
    let fleet_mesh = d.join("overlays/fleet-mesh");
    std::fs::create_dir_all(&fleet_mesh).unwrap();
    std::fs::write(
        fleet_mesh.join("kustomization.yaml"),
        "resources: [../fleet]\ncomponents: [../../components/mesh]\n",
    )
    .unwrap();
    for overlay in ["overlays/single-tls", "overlays/fleet-mesh"] {
        let (text, docs) = kustomize(d, overlay).unwrap_or_else(|e| panic!("{overlay}: {e}"));
        let crds = passes_schemas(d, overlay, &text);
        let pod = &of_kind(&docs, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(restricted(pod), Vec::<String>::new(), "{overlay}");
        if overlay.ends_with("mesh") {
            assert!(
                crds.1.contains("PeerAuthentication dimmer: ok"),
                "{}",
                crds.1
            );
            let ns = of_kind(&docs, "Namespace");
            assert_eq!(ns["metadata"]["labels"]["istio-injection"], "enabled");
            continue;
        }
        let container = &pod["containers"][0];
        assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
        assert_eq!(container["livenessProbe"]["httpGet"]["scheme"], "HTTPS");
        // Started as rendered: HTTPS with the Secret's certificate, plain
        // HTTP refused.
        let state = tempfile::tempdir().unwrap();
        let port = free_port().unwrap();
        let (mut child, args) = start_rendered(&docs, state.path(), port, None);
        let https = dimmer::tls::http_client(Some(&certs.ca))
            .unwrap()
            .build()
            .unwrap();
        let url = format!("https://127.0.0.1:{port}");
        assert_eq!(
            answers_with(&https, &mut child, &args, &url, "/livez", "").await,
            200,
            "{args:?}"
        );
        let viewer = String::from_utf8(secret_files(&docs)["viewer-token"].clone()).unwrap();
        assert_eq!(
            answers_with(&https, &mut child, &args, &url, "/v1/rollouts", &viewer).await,
            200
        );
        let plain = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{port}/livez"))
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        assert!(plain.is_err(), "{plain:?}");
        let _ = child.kill();
        let _ = child.wait();
    }
}
