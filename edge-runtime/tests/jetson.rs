//! Issue #28, Jetson deployment, through the real `edge-seg` binary: `edge-seg image` for every
//! shipped board (its service command line accepted by the binary's own parser, the units
//! accepted by `systemd-analyze verify`), the generated `flash.sh` / `install.sh`, and the two
//! things a systemd service needs from `edge-seg run`: sd_notify (READY=1, WATCHDOG=1) and a
//! clean stop on SIGTERM.
//!
//! `systemd-analyze verify` needs Debian's `systemd` package; without it that test says so and
//! passes, unless `EDGE_SEG_REQUIRE_SYSTEMD=1` (`.ci/run` sets it once systemd is installed).

use seg_test_support::assert_user_error;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use edge_seg_firmware::BoardConfig;

const MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../assets/models/camvid-lite0.onnx");

fn edge_seg(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap()
}

/// An aarch64 ELF header (what `--binary` checks), executable.
fn fake_aarch64_binary(dir: &Path) -> PathBuf {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[16] = 3; // ET_DYN
    h[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    let p = dir.join("edge-seg-aarch64");
    std::fs::write(&p, h).unwrap();
    set_exec(&p);
    p
}

fn set_exec(p: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `edge-seg image` for `board` into `out`, asserting success.
fn image(board: &str, out: &Path, binary: Option<&Path>) -> String {
    let mut args = vec![
        "image",
        "--board",
        board,
        "--model",
        MODEL,
        "--out",
        out.to_str().unwrap(),
    ];
    if let Some(b) = binary {
        args.extend(["--binary", b.to_str().unwrap()]);
    }
    let o = edge_seg(&args, out.parent().unwrap());
    assert!(
        o.status.success(),
        "{board}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Every shipped board: `edge-seg image` succeeds, which means the service's `edge-seg run`
/// arguments, read back from the rendered unit with systemd's quoting rules, were accepted by
/// this binary's own command-line parser; the scripts are valid `sh`.
#[test]
fn issue28_every_board_renders_an_overlay_the_real_parser_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_aarch64_binary(dir.path());
    for board in BoardConfig::shipped().unwrap() {
        let out = dir.path().join(&board.name);
        let stdout = image(&board.name, &out, Some(&bin));
        assert!(
            stdout.contains("service: /usr/local/bin/edge-seg run --camera /dev/edge-seg-camera"),
            "{stdout}"
        );
        // issue #24: an inference-only edge-seg cannot check the model of a board that adapts,
        // and says so (the overlay is still written: the board's binary is another build)
        assert_eq!(
            stdout.contains("this edge-seg was built without adaptation"),
            board.service.adapt && !cfg!(feature = "adapt"),
            "{}: {stdout}",
            board.name
        );
        for f in [
            "flash.sh",
            "install.sh",
            "edge-seg-image.manifest",
            "rootfs/usr/local/bin/edge-seg",
            "rootfs/opt/edge-seg/camvid-lite0.onnx",
            "rootfs/etc/edge-seg/board.toml",
            "rootfs/etc/systemd/system/edge-seg.service",
            "rootfs/etc/udev/rules.d/70-edge-seg-camera.rules",
            "rootfs/etc/sysusers.d/edge-seg.conf",
        ] {
            assert!(out.join(f).is_file(), "{}: {f} missing", board.name);
        }
        assert_eq!(
            std::fs::read(out.join("rootfs/opt/edge-seg/camvid-lite0.onnx")).unwrap(),
            std::fs::read(MODEL).unwrap()
        );
        // the installed board config is the board's
        let installed = std::fs::read_to_string(out.join("rootfs/etc/edge-seg/board.toml")).unwrap();
        assert_eq!(BoardConfig::parse(&installed, "board.toml").unwrap(), board);
        for script in ["flash.sh", "install.sh"] {
            let st = Command::new("sh").arg("-n").arg(out.join(script)).status().unwrap();
            assert!(st.success(), "{}: {script} is not valid sh", board.name);
        }
        // a second run into the same folder rewrites its own files
        image(&board.name, &out, Some(&bin));
    }
}

fn board_file(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    let text = edit(edge_seg_firmware::board::SHIPPED[0].1.to_string());
    let p = dir.join(format!("{}.toml", edge_seg_firmware::board::SHIPPED[0].0));
    std::fs::write(&p, text).unwrap();
    p
}

/// The parser check is real: arguments `edge-seg run` rejects make `edge-seg image` fail with a
/// one-line error naming the board file, and nothing is written.
#[test]
fn issue28_arguments_run_rejects_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases = [
        (
            "extra_args = []",
            r#"extra_args = ["--no-such-flag"]"#,
            "unexpected argument '--no-such-flag'",
        ),
        (
            "extra_args = []",
            r#"extra_args = ["--jpeg-quality", "many"]"#,
            "invalid value 'many'",
        ),
        (
            "extra_args = []",
            r#"extra_args = ["--input", "clip.y4m"]"#,
            "cannot be used with",
        ),
        (
            "extra_args = []",
            r#"extra_args = ["--help"]"#,
            "rejects the service's arguments",
        ),
        // checked by the board format itself, before the parser
        (
            "size = \"1280x720\"",
            "size = \"20000x16\"",
            "camera.size = \"20000x16\"",
        ),
    ];
    for (from, to, want) in cases {
        let p = board_file(dir.path(), |t| {
            assert!(t.contains(from), "{from}");
            t.replace(from, to)
        });
        let o = edge_seg(
            &[
                "image",
                "--board",
                p.to_str().unwrap(),
                "--model",
                MODEL,
                "--out",
                out.to_str().unwrap(),
            ],
            dir.path(),
        );
        assert_user_error(&o, want);
        assert_user_error(&o, p.to_str().unwrap());
        assert!(!out.exists(), "{to}: something was written");
    }
}

#[test]
fn issue28_bad_inputs_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let host_binary = env!("CARGO_BIN_EXE_edge-seg");
    let args = |extra: &[&str]| {
        let mut a = vec![
            "image",
            "--board",
            "jetson-orin-nano-devkit",
            "--model",
            MODEL,
            "--out",
            o,
        ];
        a.extend(extra);
        a.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        edge_seg(&a, dir.path())
    };
    assert_user_error(
        &run(args(&["--binary", host_binary])),
        "an ELF for x86-64, not aarch64: cross-build it",
    );
    let text_model = dir.path().join("model.onnx");
    std::fs::write(&text_model, "not a model").unwrap();
    let mut a = args(&[]);
    a[4] = text_model.display().to_string();
    assert_user_error(&run(a), &format!("--model {}", text_model.display()));
    let mut a = args(&[]);
    a[2] = "jetson-tk1".into();
    assert_user_error(&run(a), "--board jetson-tk1: no such board");
    let mut a = args(&[]);
    a[2] = dir.path().join("missing.toml").display().to_string();
    assert_user_error(&run(a), "missing.toml: cannot read");
    assert!(!out.exists());
    // --out: someone else's file in the way is not overwritten
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("install.sh"), "mine").unwrap();
    assert_user_error(&run(args(&[])), "not written by `edge-seg image`");
    assert_eq!(std::fs::read_to_string(out.join("install.sh")).unwrap(), "mine");
}

/// A fake `Linux_for_Tegra`: the folders flash.sh looks for, the release file, and a stub
/// flash script that records its arguments.
fn fake_l4t(root: &Path, release: &str) -> PathBuf {
    let l4t = root.join("Linux_for_Tegra");
    for d in ["bootloader", "tools/kernel_flash", "rootfs/etc"] {
        std::fs::create_dir_all(l4t.join(d)).unwrap();
    }
    std::fs::write(l4t.join("rootfs/etc/nv_tegra_release"), format!("{release}\n")).unwrap();
    let stub = "#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > \"$(dirname \"$0\")/flashed-with\"\n";
    for s in ["flash.sh", "tools/kernel_flash/l4t_initrd_flash.sh"] {
        std::fs::write(l4t.join(s), stub).unwrap();
        set_exec(&l4t.join(s));
    }
    l4t
}

/// flash.sh refuses to run outside an unpacked L4T tree of the board's release, and inside one
/// installs the overlay into rootfs/ and calls NVIDIA's script with the board's arguments.
#[test]
fn issue28_flash_sh_checks_the_tree_then_flashes() {
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_aarch64_binary(dir.path());
    let out = dir.path().join("overlay");
    image("jetson-orin-nano-devkit", &out, Some(&bin));
    let board = BoardConfig::load("jetson-orin-nano-devkit").unwrap();
    let flash = |cwd: &Path, env: &[(&str, &str)]| {
        Command::new("sh")
            .arg(out.join("flash.sh"))
            .current_dir(cwd)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    // not a tree
    assert_user_error(&flash(dir.path(), &[]), "is not an unpacked L4T Linux_for_Tegra tree");
    // another release
    let other = fake_l4t(
        &dir.path().join("r35"),
        "# R35 (release), REVISION: 6.1, GCID: 1, BOARD: t186ref",
    );
    assert_user_error(&flash(&other, &[]), "configured for Jetson Linux 36.4.4");
    // the right one, dry run: the steps, printed
    let l4t = fake_l4t(
        &dir.path().join("r36"),
        "# R36 (release), REVISION: 4.4, GCID: 1, BOARD: generic",
    );
    let o = flash(&l4t, &[("EDGE_SEG_DRY_RUN", "1")]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    let want = format!("+ {}", board.flash_command().join(" "));
    assert!(stdout.lines().any(|l| l == want), "{want} not in:\n{stdout}");
    assert!(!l4t.join("flashed-with").exists());
    // L4T_DIR names the tree from anywhere
    let o = flash(
        dir.path(),
        &[("EDGE_SEG_DRY_RUN", "1"), ("L4T_DIR", l4t.to_str().unwrap())],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // for real (needs root for install -o 0): the overlay lands in rootfs/, the stub is called
    let uid = Command::new("id").arg("-u").output().unwrap();
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipping the non-dry flash.sh run: not root");
        return;
    }
    let o = flash(&l4t, &[]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let args: Vec<String> = std::fs::read_to_string(l4t.join("tools/kernel_flash/flashed-with"))
        .unwrap()
        .lines()
        .skip(1)
        .map(String::from)
        .collect();
    assert_eq!(args, board.flash_command()[1..]);
    for f in [
        "usr/local/bin/edge-seg",
        "etc/systemd/system/edge-seg.service",
        "opt/edge-seg/camvid-lite0.onnx",
    ] {
        assert_eq!(
            std::fs::read(l4t.join("rootfs").join(f)).unwrap(),
            std::fs::read(out.join("rootfs").join(f)).unwrap(),
            "{f}"
        );
    }
    // without the binary, flash.sh stops and says how to get one
    let bare = dir.path().join("bare");
    image("jetson-orin-nano-devkit", &bare, None);
    let o = Command::new("sh")
        .arg(bare.join("flash.sh"))
        .current_dir(&l4t)
        .output()
        .unwrap();
    assert_user_error(&o, "cross-build it");
}

#[test]
fn issue28_install_sh_refuses_off_a_jetson() {
    if Path::new("/etc/nv_tegra_release").exists() {
        eprintln!("skipping: this is a Jetson");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("overlay");
    image("jetson-xavier-nx", &out, Some(&fake_aarch64_binary(dir.path())));
    let o = Command::new("sh").arg(out.join("install.sh")).output().unwrap();
    assert_user_error(&o, "this is not a Jetson");
}

fn systemd_analyze() -> Option<PathBuf> {
    let found = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        assert_ne!(
            std::env::var("EDGE_SEG_REQUIRE_SYSTEMD").as_deref(),
            Ok("1"),
            "systemd-analyze is required but not installed"
        );
        eprintln!("skipping: no systemd-analyze (apt-get install systemd)");
    }
    found
}

/// `systemd-analyze verify` on every board's units, in a root made of the host's unit folder,
/// the overlay, and stand-ins for the programs that exist only on a Jetson; any warning fails.
/// `systemd-sysusers --dry-run` on the sysusers entry.
#[test]
fn issue28_systemd_verifies_the_units() {
    let Some(analyze) = systemd_analyze() else { return };
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .find(|p| Path::new(p).join("sysinit.target").exists())
        .expect("systemd-analyze without systemd's unit folder");
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_aarch64_binary(dir.path());
    for board in BoardConfig::shipped().unwrap() {
        let out = dir.path().join(&board.name);
        image(&board.name, &out, Some(&bin));
        let root = out.join("rootfs");
        std::fs::create_dir_all(root.join("usr/lib/systemd")).unwrap();
        let st = Command::new("cp")
            .args(["-a", host_units])
            .arg(root.join("usr/lib/systemd/system"))
            .status()
            .unwrap();
        assert!(st.success());
        // on the board: nvargus, v4l2loopback and GStreamer (CSI bridge)
        for stand_in in ["sbin/modprobe", "usr/bin/gst-launch-1.0"] {
            let p = root.join(stand_in);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            set_exec(&p);
        }
        let mut units = vec!["/etc/systemd/system/edge-seg.service".to_string()];
        if root.join("etc/systemd/system/edge-seg-camera.service").exists() {
            units.push("/etc/systemd/system/edge-seg-camera.service".into());
        }
        let o = Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .args(&units)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success() && err.trim().is_empty(), "{}: {err}", board.name);
        // and it does fail on a broken unit
        let unit = root.join("etc/systemd/system/edge-seg.service");
        let good = std::fs::read_to_string(&unit).unwrap();
        std::fs::write(&unit, good.replace("--serve", "\"--serve")).unwrap();
        let o = Command::new(&analyze)
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg("/etc/systemd/system/edge-seg.service")
            .output()
            .unwrap();
        assert!(
            !o.status.success(),
            "{}: verify accepted unbalanced quoting",
            board.name
        );
        std::fs::write(&unit, good).unwrap();
        let o = Command::new("systemd-sysusers")
            .args(["--dry-run", &format!("--root={}", root.display())])
            .arg(root.join("etc/sysusers.d/edge-seg.conf"))
            .output()
            .unwrap();
        // it logs what it would do on stderr
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(o.status.success(), "{log}");
        assert!(log.contains("Creating user 'edge-seg'"), "{log}");
        assert!(!log.contains("Failed") && !log.contains("ignoring"), "{log}");
        println!("systemd-analyze verify: {} units of {} OK", units.len(), board.name);
    }
}

/// `edge-seg run` under systemd's `Type=notify`: READY=1 with the first frame out, WATCHDOG=1
/// while frames flow, STOPPING=1 at the end, on the socket `NOTIFY_SOCKET` names.
#[test]
fn issue28_run_notifies_systemd() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(["run", "--output", "out", "--stats", "s.jsonl"])
        .current_dir(dir.path())
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000")
        .env_remove("WATCHDOG_PID")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 1024];
    let mut msgs = Vec::new();
    while let Ok(n) = sock.recv(&mut buf) {
        msgs.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let frames = edge_seg_runtime::DEFAULT_SAMPLES.len();
    assert_eq!(msgs.len(), frames + 1, "{msgs:?}");
    assert!(msgs[0].starts_with("READY=1\n"), "{msgs:?}");
    for m in &msgs[1..frames] {
        assert!(m.starts_with("WATCHDOG=1\nSTATUS=segmenting: "), "{msgs:?}");
    }
    assert!(msgs[frames].starts_with("STOPPING=1"), "{msgs:?}");
    // without NOTIFY_SOCKET nothing is sent and the run is unchanged
    let o = Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(["run", "--output", "out2", "--max-frames", "1"])
        .current_dir(dir.path())
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(sock.recv(&mut buf).is_err());
}

/// systemd stops a service with SIGTERM: `edge-seg run` ends like on Ctrl-C (exit 0, the
/// summary written, `interrupted`), instead of dying mid-frame.
#[test]
fn issue28_sigterm_stops_a_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_edge-seg"))
        .args(["run", "--camera", "97", "--reconnect", "--stats", "s.jsonl"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let st = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "killed instead of stopping: {:?} {err}",
        out.status
    );
    let text = std::fs::read_to_string(dir.path().join("s.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["summary"]["interrupted"], true, "{text}");
}
