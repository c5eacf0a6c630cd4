//! `arbor completions` and `arbor man`: generated, then checked with the
//! real shells and groff (syntax, and what they complete or render).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

fn generated(shell: &str) -> String {
    arbor_ok(["completions", shell]).stdout_str()
}

#[track_caller]
fn shell_ok(program: &str, args: &[&str]) -> String {
    let mut c = Command::new(program);
    c.args(args);
    run(c).assert_ok().stdout_str()
}

#[test]
fn completions_parse_and_complete() {
    let tmp = tempdir();
    for (shell, check) in [
        ("bash", &["-n"][..]),
        ("zsh", &["-n"][..]),
        ("fish", &["--no-execute"][..]),
    ] {
        let script = tmp.path().join(format!("arbor.{shell}"));
        std::fs::write(&script, generated(shell)).unwrap();
        let mut args = check.to_vec();
        args.push(script.to_str().unwrap());
        shell_ok(shell, &args);
    }
    let bash = tmp.path().join("arbor.bash");
    // bash: the words offered after `arbor pu`, `arbor checkout --li` and
    // `arbor checkout --link ` (called as bash calls it: command, current
    // word, previous word).
    let complete = |words: &[&str]| {
        let n = words.len() - 1;
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        shell_ok(
            "bash",
            &[
                "-c",
                &format!(
                    "source {}; COMP_WORDS=({}); COMP_CWORD={n}; _arbor arbor '{}' '{}'; \
                     printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                    bash.display(),
                    quoted.join(" "),
                    words[n],
                    words[n - 1]
                ),
            ],
        )
    };
    assert_eq!(complete(&["arbor", "pu"]), "pull\n");
    assert_eq!(complete(&["arbor", "checkout", "--li"]), "--link\n");
    assert_eq!(
        complete(&["arbor", "checkout", "--link", ""]),
        "auto\nhardlink\nreflink\ncopy\n"
    );
    // fish: the same question, with descriptions.
    let fish = tmp.path().join("arbor.fish");
    let out = shell_ok(
        "fish",
        &[
            "-c",
            &format!("source {}; complete -C 'arbor rem'", fish.display()),
        ],
    );
    assert_eq!(
        out,
        "remote\tManage remotes (kept in the repository config, visible to ostree)\n"
    );
    let out = shell_ok(
        "fish",
        &[
            "-c",
            &format!(
                "source {}; complete -C 'arbor stage list --j'",
                fish.display()
            ),
        ],
    );
    assert!(out.starts_with("--json\t"), "{out:?}");
}

#[test]
fn manual_pages() {
    // The main page on standard output.
    let page = arbor_ok(["man"]).stdout_str();
    assert!(page.contains(".TH arbor 1"), "{page}");
    for sub in ["pull", "checkout", "completions", "man", "stage"] {
        assert!(page.contains(&format!("arbor\\-{sub}(1)")), "{sub}: {page}");
    }
    // One page per command and subcommand, each valid for groff.
    let tmp = tempdir();
    arbor_ok(["man", tmp.path().to_str().unwrap()]);
    let names: BTreeSet<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut want: BTreeSet<String> = [
        "",
        "-cat",
        "-checkout",
        "-commit",
        "-completions",
        "-fsck",
        "-init",
        "-log",
        "-ls",
        "-man",
        "-pull",
        "-refs",
        "-remote",
        "-remote-add",
        "-remote-delete",
        "-remote-gpg-import",
        "-remote-list",
        "-remote-refs",
        "-rev-parse",
        "-show",
        "-stage",
        "-stage-commit",
        "-stage-create",
        "-stage-destroy",
        "-stage-exec",
        "-stage-gc",
        "-stage-list",
        "-stage-path",
    ]
    .iter()
    .map(|s| format!("arbor{s}.1"))
    .collect();
    // Commands added since (by other work) have pages too: only check
    // that every page above is there.
    want.retain(|n| !names.contains(n));
    assert!(want.is_empty(), "missing pages: {want:?} (have {names:?})");
    for name in &names {
        let path = tmp.path().join(name);
        let r = run({
            let mut c = Command::new("groff");
            c.args(["-K", "utf8", "-man", "-Tutf8", "-ww", "-z"])
                .arg(&path);
            c
        })
        .assert_ok();
        assert_eq!(r.stderr_str(), "", "{name}: groff warnings");
    }
    let pull = std::fs::read_to_string(tmp.path().join("arbor-pull.1")).unwrap();
    for flag in ["json", "sign\\-key\\-basedir", "localcache\\-repo"] {
        assert!(pull.contains(&format!("\\-\\-{flag}")), "{flag}: {pull}");
    }
    // A directory that does not exist is an error naming it.
    let missing = tmp.path().join("nope");
    let r = arbor(["man", missing.to_str().unwrap()]).assert_clean_failure();
    assert!(r.stderr_str().contains("nope"), "{}", r.describe());
}
