//! `make package`'s OCI image goes through a real registry (Debian's
//! docker-registry on 127.0.0.1) and comes back byte-identical, with the digest
//! that `meshguard render` pins in the Istio WasmPlugin; the module itself keeps
//! its size budget and exports the ABI its route-cache choice assumes; meshguard
//! native ships beside the image with a sha256 that checks.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshguard_integration_tests::schemas::validate;
use meshguard_integration_tests::{http_get, native_dir, repo_root, wasm_path};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e} (run `make setup`)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd} {args:?} failed:\n{stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Registry(Child);

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_registry(dir: &Path) -> (Registry, String) {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.join("registry.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start docker-registry (run `make setup`)");
    let reg = Registry(child);
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(addr.parse().unwrap(), "/v2/").is_ok_and(|(c, _)| c == 200) {
        assert!(Instant::now() < deadline, "registry did not come up");
        std::thread::sleep(Duration::from_millis(100));
    }
    (reg, addr)
}

#[test]
fn the_image_round_trips_through_a_registry_byte_identical_with_the_pinned_digest() {
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("layout");
    let layout_s = layout.display().to_string();
    let wasm = wasm_path();
    let out = run(
        "scripts/package-oci.sh",
        &[wasm.to_str().unwrap(), &layout_s, "test"],
    );
    let digest = out.lines().last().unwrap().trim().to_string();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );

    let (_reg, addr) = start_registry(dir.path());
    let remote = format!("docker://{addr}/meshguard:test");
    run(
        "skopeo",
        &[
            "copy",
            "--dest-tls-verify=false",
            &format!("oci:{layout_s}:test"),
            &remote,
        ],
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&run("skopeo", &["inspect", "--tls-verify=false", &remote])).unwrap();
    assert_eq!(
        inspect["Digest"],
        digest.as_str(),
        "the registry serves the digest we pin"
    );
    assert_eq!(
        inspect["Layers"].as_array().map(Vec::len),
        Some(1),
        "one layer: plugin.wasm"
    );

    let pulled = dir.path().join("pulled");
    let pulled_s = pulled.display().to_string();
    run(
        "skopeo",
        &[
            "copy",
            "--src-tls-verify=false",
            &remote,
            &format!("oci:{pulled_s}:test"),
        ],
    );
    let bundle = dir.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--rootless",
            "--image",
            &format!("{pulled_s}:test"),
            bundle.to_str().unwrap(),
        ],
    );
    let rootfs: Vec<String> = std::fs::read_dir(bundle.join("rootfs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(rootfs, vec!["plugin.wasm"]);
    assert_eq!(
        std::fs::read(bundle.join("rootfs/plugin.wasm")).unwrap(),
        std::fs::read(&wasm).unwrap()
    );

    // The same digest, pinned by `meshguard render`, passes Istio's schema.
    let cli = repo_root().join("target/release/meshguard");
    let rendered = run(
        cli.to_str().unwrap(),
        &[
            "render",
            "--target",
            "istio",
            "--image",
            &format!("oci://{addr}/meshguard:test"),
            "--sha256",
            &digest,
            "config/examples/canary.yaml",
        ],
    );
    let docs: Vec<serde_json::Value> = rendered
        .split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d.trim_start_matches("---\n")).unwrap())
        .collect();
    let plugin = docs.iter().find(|d| d["kind"] == "WasmPlugin").unwrap();
    assert_eq!(
        plugin["spec"]["sha256"],
        digest.trim_start_matches("sha256:")
    );
    assert_eq!(validate(plugin), Vec::<String>::new());
}

/// The module stays under 1 MiB (docs/src/performance.md: every worker's V8
/// compiles all of it, and its size drives Envoy's memory and start time).
#[test]
fn the_module_stays_under_one_mebibyte() {
    let size = std::fs::metadata(wasm_path()).expect("make build").len();
    assert!(size <= 1 << 20, "meshguard.wasm is {size} bytes");
}

/// `routeCache: auto` skips `clear_route_cache` because the module targets
/// Proxy-Wasm ABI 0.2.1 (`filter/wasm/build.rs`, from Cargo.lock): the built module must
/// export exactly that ABI's marker, or Envoy would not clear the route cache by
/// itself and canary routing would silently stay on the first route.
#[test]
fn the_module_exports_the_abi_the_route_cache_choice_assumes() {
    let bytes = std::fs::read(wasm_path()).expect("make build");
    let exports: Vec<String> = (0..bytes.len())
        .filter(|&i| bytes[i..].starts_with(b"proxy_abi_version_"))
        .map(|i| {
            let end = bytes[i..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
                .map_or(bytes.len(), |n| i + n);
            String::from_utf8_lossy(&bytes[i..end]).into_owned()
        })
        .collect();
    assert_eq!(exports, ["proxy_abi_version_0_2_1"]);
    let lock = std::fs::read_to_string(repo_root().join("Cargo.lock")).unwrap();
    let sdk = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"proxy-wasm\""))
        .expect("proxy-wasm in Cargo.lock");
    assert!(sdk.contains("version = \"0.2."), "{sdk}");
}

#[test]
fn the_native_module_ships_beside_the_image_with_a_sha256_that_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("oci");
    let module = native_dir().join("libmeshguard.so");
    let out = run(
        "scripts/package-native.sh",
        &[module.to_str().unwrap(), out_dir.to_str().unwrap()],
    );
    let printed = out.lines().last().unwrap_or_default().trim().to_string();
    let shipped = std::fs::read(out_dir.join("libmeshguard.so")).expect("the shipped module");
    assert_eq!(
        shipped,
        std::fs::read(&module).expect("make build"),
        "the module as built"
    );
    let line = std::fs::read_to_string(out_dir.join("libmeshguard.so.sha256")).expect("sha256");
    assert_eq!(line, format!("{printed}  libmeshguard.so\n"));
    assert_eq!(printed.len(), 64, "{printed}");
    let check = Command::new("sha256sum")
        .args(["-c", "libmeshguard.so.sha256"])
        .current_dir(&out_dir)
        .output()
        .expect("sha256sum");
    assert!(check.status.success(), "{check:?}");
    // A missing module is an error that says what to do, not an empty file.
    let missing = Command::new("scripts/package-native.sh")
        .args(["/nonexistent/libmeshguard.so", out_dir.to_str().unwrap()])
        .current_dir(repo_root())
        .output()
        .expect("run the script");
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("not found (make build)"));
}
