//! The executor against real systemd: a unit with its config file, enabled and started; a re-run
//! changes nothing; changing the config restarts the unit (and only then); symlinks switch
//! atomically; a secret file is 0600 and never shown in a dry-run description. Steps sent
//! together stop at the first that fails, whose error names it alone; a re-run completes.

mod support;
use provision::cluster::SshTarget;
use provision::host::action::{Action, UnitSpec};
use provision::host::executor;
use provision::ssh::{HostKeyPolicy, Session};
use support::Testbed;

fn actions(greeting: &str, link_target: &str) -> Vec<Action> {
    vec![
        Action::file(
            "/etc/demo/greeting.env",
            format!("GREETING={greeting}\n"),
            0o644,
        ),
        Action::secret_file("/etc/demo/token", "s3cr3t-token-value\n"),
        Action::file(
            "/etc/systemd/system/demo.service",
            "[Service]\nEnvironmentFile=/etc/demo/greeting.env\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n",
            0o644,
        ),
        Action::Symlink {
            path: "/usr/local/bin/demo-current".into(),
            target: link_target.into(),
        },
        Action::Unit(UnitSpec {
            name: "demo.service".into(),
            enabled: true,
            active: true,
            restart_when_changed: vec![
                "/etc/demo/greeting.env".into(),
                "/etc/systemd/system/demo.service".into(),
            ],
        }),
    ]
}

fn target(tb: &Testbed) -> SshTarget {
    let m = &tb.machines[0];
    SshTarget {
        address: m.address.clone(),
        port: 22,
        user: "root".into(),
        identity_file: Some(tb.key()),
        known_hosts_file: tb.known_hosts(),
        bastion: None,
        sudo: false,
        connect_timeout_seconds: 10,
        command_timeout_seconds: 60,
    }
}

#[test]
fn units_restart_only_when_their_inputs_change() {
    let tb = Testbed::up(1);
    let m = &tb.machines[0];
    let target = target(&tb);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Session::connect(&m.name, &target, HostKeyPolicy::Strict)
            .await
            .unwrap();
        let apply = |a: Vec<Action>| {
            let s = &s;
            async move {
                let plan = executor::plan(s, &a).await.unwrap();
                let applied = executor::apply(s, &a, &plan).await.unwrap();
                applied.changes
            }
        };
        let pid = || async {
            s.run("systemctl show -p MainPID --value demo.service")
                .await
                .unwrap()
        };

        let first = apply(actions("hello", "/bin/true")).await;
        assert!(
            first.iter().any(|c| c.starts_with("reload systemd")),
            "{first:?}"
        );
        assert!(
            first.iter().any(|c| c == "enable demo.service"),
            "{first:?}"
        );
        assert!(first.iter().any(|c| c == "start demo.service"), "{first:?}");
        assert_eq!(
            tb.ssh(
                0,
                "systemctl is-active demo.service; systemctl is-enabled demo.service"
            ),
            "active\nenabled\n"
        );
        assert_eq!(
            tb.ssh(
                0,
                "stat -c %a /etc/demo/token; readlink /usr/local/bin/demo-current"
            ),
            "600\n/bin/true\n"
        );
        let pid1 = pid().await;

        assert!(
            apply(actions("hello", "/bin/true")).await.is_empty(),
            "a re-run changed something"
        );
        assert_eq!(pid().await, pid1, "the unit restarted without cause");

        // switching the link alone does not restart the unit
        let changes = apply(actions("hello", "/bin/false")).await;
        assert_eq!(
            changes,
            vec!["point /usr/local/bin/demo-current to /bin/false (was /bin/true)".to_string()]
        );
        assert_eq!(pid().await, pid1);

        // a changed input restarts it
        let changes = apply(actions("bonjour", "/bin/false")).await;
        assert!(
            changes
                .iter()
                .any(|c| c.starts_with("restart demo.service (/etc/demo/greeting.env changed)")),
            "{changes:?}"
        );
        assert_ne!(
            pid().await,
            pid1,
            "the unit kept running with its old config"
        );

        // a dry-run description shows the diff of the config but never the secret
        let mut wanted = actions("hola", "/bin/false");
        if let Action::File(f) = &mut wanted[1] {
            f.content = b"another-secret-value\n".to_vec();
        }
        let plan = executor::plan(&s, &wanted).await.unwrap();
        let text = executor::describe(&s, &wanted, &plan)
            .await
            .unwrap()
            .join("\n");
        assert!(
            text.contains("-GREETING=bonjour") && text.contains("+GREETING=hola"),
            "{text}"
        );
        assert!(text.contains("content not shown: secret"), "{text}");
        assert!(
            !text.contains("secret-value") && !text.contains("s3cr3t"),
            "{text}"
        );
        assert_eq!(
            tb.ssh(0, "cat /etc/demo/greeting.env"),
            "GREETING=bonjour\n",
            "describe changed the host"
        );
    });
}

/// Directories, a file, a command and a link: the command fails until its input exists.
fn steps(fixed: bool) -> Vec<Action> {
    let mut all = vec![
        Action::dir("/srv/demo", 0o750),
        Action::dir("/srv/demo/conf", 0o755),
        Action::file("/srv/demo/conf/a.conf", "a\n", 0o644),
        Action::Exec {
            label: "check the demo input".into(),
            cmd: "test -e /srv/demo/input || { echo 'no input in /srv/demo' >&2; exit 7; }; touch /srv/demo/checked".into(),
            unless: "test -e /srv/demo/checked".into(),
        },
        Action::Symlink {
            path: "/srv/demo/current".into(),
            target: "/srv/demo/conf".into(),
        },
    ];
    if fixed {
        all.insert(3, Action::file("/srv/demo/input", "", 0o644));
    }
    all
}

#[test]
fn a_failed_step_names_itself_the_rest_waits_and_a_rerun_completes() {
    let tb = Testbed::up(1);
    let m = &tb.machines[0];
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let s = Session::connect(&m.name, &target(&tb), HostKeyPolicy::Strict)
            .await
            .unwrap();
        let broken = steps(false);
        let plan = executor::plan(&s, &broken).await.unwrap();
        let err = executor::apply(&s, &broken, &plan)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("check the demo input")
                && err.contains("exit status 7")
                && err.ends_with("no input in /srv/demo"),
            "{err}"
        );
        // what came before the failure is done; what comes after is not
        assert_eq!(
            tb.ssh(0, "stat -c %a /srv/demo; cat /srv/demo/conf/a.conf"),
            "750\na\n"
        );
        assert_eq!(
            tb.ssh(0, "test -e /srv/demo/current && echo there || echo absent"),
            "absent\n"
        );

        let fixed = steps(true);
        let plan = executor::plan(&s, &fixed).await.unwrap();
        let applied = executor::apply(&s, &fixed, &plan).await.unwrap().changes;
        assert_eq!(applied.len(), 3, "{applied:?}");
        assert_eq!(tb.ssh(0, "readlink /srv/demo/current"), "/srv/demo/conf\n");
        let again = executor::plan(&s, &fixed).await.unwrap();
        assert!(again.changes.is_empty(), "{:?}", again.changes);
    });
}
