use pharos_storage::labels::Labels;

use super::*;

struct FakeQuery;

impl TemplateQuery for FakeQuery {
    fn query(&self, q: &str) -> Result<Vec<QSample>, String> {
        if q == "bad(" {
            return Err("parse error".into());
        }
        Ok(vec![QSample {
            labels: Labels::from_pairs([("instance", "a:9090"), ("job", "j")]),
            value: 42.5,
        }])
    }
}

fn run(text: &str, value: f64) -> Result<String, TemplateError> {
    let labels = Labels::from_pairs([("instance", "host.example.com:9100"), ("job", "node")]);
    let ext = Labels::from_pairs([("cluster", "eu")]);
    let data = TemplateData {
        labels: &labels,
        external_labels: &ext,
        external_url: "http://pharos:9090",
        value,
    };
    expand_alert_template("__alert_Test", text, &data, Some(&FakeQuery))
}

#[test]
fn labels_value_and_functions() {
    assert_eq!(
        run("{{ $labels.instance }} is {{ $value }}", 0.5).unwrap(),
        "host.example.com:9100 is 0.5"
    );
    assert_eq!(
        run("{{ .Labels.job }}/{{ $externalLabels.cluster }}", 1.0).unwrap(),
        "node/eu"
    );
    assert_eq!(run("{{ humanize $value }}", 1234567.0).unwrap(), "1.235M");
    assert_eq!(
        run("{{ $value | humanizePercentage }}", 0.25).unwrap(),
        "25%"
    );
    assert_eq!(run("{{ humanizeDuration 3661 }}", 0.0).unwrap(), "1h 1m 1s");
    assert_eq!(
        run(r#"{{ printf "%.2f" $value }}"#, 3.14659).unwrap(),
        "3.15"
    );
    assert_eq!(run(r#"{{ printf "%s-%d" "a" 3 }}"#, 0.0).unwrap(), "a-3");
    assert_eq!(
        run(
            r#"{{ with query "up" }}{{ . | first | value }}{{ end }}"#,
            0.0
        )
        .unwrap(),
        "42.5"
    );
    assert_eq!(
        run(
            r#"{{ range query "up" }}{{ .Labels.job }}={{ .Value }}{{ end }}"#,
            0.0
        )
        .unwrap(),
        "j=42.5"
    );
    assert_eq!(
        run(r#"{{ query "up" | first | label "instance" }}"#, 0.0).unwrap(),
        "a:9090"
    );
    assert_eq!(
        run("{{ $labels.instance | stripPort | toUpper }}", 0.0).unwrap(),
        "HOST.EXAMPLE.COM"
    );
    assert_eq!(
        run(r#"{{ reReplaceAll "(.*):.*" "$1" $labels.instance }}"#, 0.0).unwrap(),
        "host.example.com"
    );
    assert_eq!(
        run(
            r#"{{ if match "^host" $labels.instance }}yes{{ else }}no{{ end }}"#,
            0.0
        )
        .unwrap(),
        "yes"
    );
    assert_eq!(
        run("{{ title \"hello world\" }}", 0.0).unwrap(),
        "Hello World"
    );
    assert_eq!(run("{{ $x := 3 }}{{ $x }}", 0.0).unwrap(), "3");
    assert_eq!(run("a {{- \" b \" -}} c", 0.0).unwrap(), "a b c");
    assert_eq!(run("{{/* comment */}}x", 0.0).unwrap(), "x");
    assert_eq!(
        run("{{ $a := args 1 \"x\" }}{{ $a.arg1 }}", 0.0).unwrap(),
        "x"
    );
}

#[test]
fn conditionals() {
    let t = "{{ if gt $value 80.0 }}high{{ else if gt $value 50.0 }}mid{{ else }}low{{ end }}";
    assert_eq!(run(t, 90.0).unwrap(), "high");
    assert_eq!(run(t, 60.0).unwrap(), "mid");
    assert_eq!(run(t, 10.0).unwrap(), "low");
    assert_eq!(
        run(
            "{{ if and (eq $labels.job \"node\") (not false) }}ok{{ end }}",
            0.0
        )
        .unwrap(),
        "ok"
    );
    assert_eq!(
        run(
            "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
            0.0
        )
        .unwrap(),
        "instance=host.example.com:9100;job=node;"
    );
}

#[test]
fn errors_are_reported_with_lines_not_panics() {
    let e = run("line1\n{{ $labels.instance ", 0.0).unwrap_err();
    assert_eq!(e.line, 2);
    assert!(
        e.to_string().starts_with("template: __alert_Test:2:"),
        "{e}"
    );
    let e = run("{{ nosuchfunc }}", 0.0).unwrap_err();
    assert!(e.msg.contains("function \"nosuchfunc\" not defined"), "{e}");
    assert!(run("{{ if true }}x", 0.0).is_err());
    assert!(run("{{ end }}", 0.0).is_err());
    assert!(run("{{ $nosuch }}", 0.0).is_err());
    assert!(run(r#"{{ query "bad(" }}"#, 0.0).unwrap_err().exec);
    assert!(run(r#"{{ query "up" | first | value | humanize }}"#, 0.0).is_ok());
    for junk in [
        "{{",
        "{{}}",
        "{{ ( }}",
        "{{ ) }}",
        "{{ | }}",
        "{{ \"x }}",
        "{{ .a.b.c }}",
        "{{ index $labels }}",
        "{{ 1 | 2 }}",
        "{{ first 1 }}",
        "{{-}}",
    ] {
        let _ = run(junk, 0.0);
    }
}

#[test]
fn links_and_prefix() {
    assert_eq!(run("{{ pathPrefix }}", 0.0).unwrap(), "");
    assert_eq!(
        run(r#"{{ graphLink "up == 0" }}"#, 0.0).unwrap(),
        "/graph?g0.expr=up+%3D%3D+0&g0.tab=0"
    );
    assert_eq!(
        run(r#"{{ tableLink "up" }}"#, 0.0).unwrap(),
        "/graph?g0.expr=up&g0.tab=1"
    );
}

/// Every splice of template fragments parses or fails cleanly: no panic,
/// whatever the input.
#[test]
fn never_panics_on_fragment_soup() {
    let frags = [
        "{{", "}}", "{{-", "-}}", " ", "$labels", ".Labels", ".x", "$value", "|", "(", ")",
        "\"s\"", "`r`", "1", "-2.5e3", "if", "else", "end", "range", "with", ":=", ",", "printf",
        "humanize", "query", "first", "index", "/*", "*/", "\n", "é", "$", ".",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..20_000 {
        let mut t = String::new();
        for _ in 0..(seed % 9) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            t.push_str(frags[(seed % frags.len() as u64) as usize]);
        }
        seed = seed.wrapping_add(0x2545_F491_4F6C_DD1D);
        let _ = run(&t, 1.0);
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(run(&deep_parens, 0.0)
        .unwrap_err()
        .msg
        .contains("nested too deeply"));
    let deep_ifs = format!(
        "{}x{}",
        "{{ if true }}".repeat(10_000),
        "{{ end }}".repeat(10_000)
    );
    assert!(run(&deep_ifs, 0.0)
        .unwrap_err()
        .msg
        .contains("nested too deeply"));
    let ok = format!("{}x{}", "{{ if true }}".repeat(50), "{{ end }}".repeat(50));
    assert_eq!(run(&ok, 0.0).unwrap(), "x");
}
