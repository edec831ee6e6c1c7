//! REPORT.md, report.json and the plots, all written from the one JSON value so the Markdown
//! can never show a number that report.json lacks.
use std::fmt::Write as _;
use std::path::Path;

use rws_corrupt::Corruption;
use rws_plot::Series;
use serde_json::Value;

use crate::{Error, Result};

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn pct(v: &Value) -> String {
    format!("{:.2}", f(v))
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| Error::Io { path: tmp.clone(), source: e })?;
    std::fs::rename(&tmp, path).map_err(|e| Error::Io { path: path.to_path_buf(), source: e })
}

fn sweep_series(rows: &Value, x: impl Fn(&Value) -> f64) -> Vec<Series> {
    let rows = rows.as_array().cloned().unwrap_or_default();
    vec![
        Series { label: "TA (clean)".into(), points: rows.iter().map(|r| (x(r), f(&r["ta"]))).collect() },
        Series { label: "RA (own corruption)".into(), points: rows.iter().map(|r| (x(r), f(&r["ra"]))).collect() },
    ]
}

fn sweep_table(md: &mut String, rows: &Value, key: &str) {
    let _ = writeln!(md, "| {key} | mean TA | mean RA |\n|---|---|---|");
    for r in rows.as_array().into_iter().flatten() {
        let _ = writeln!(md, "| {} | {} | {} |", r[key], pct(&r["ta"]), pct(&r["ra"]));
    }
    md.push('\n');
}

pub fn write(out: &Path, r: &Value, cors: &[Corruption]) -> Result<()> {
    let json = serde_json::to_string_pretty(r).expect("report serialises");
    write_atomic(&out.join("report.json"), &json)?;
    let s = &r["settings"];
    let names: Vec<String> = cors.iter().map(|c| c.name().to_string()).collect();
    let mut md = String::new();
    let _ = writeln!(md, "# Robust Weight Signatures on Fashion-MNIST\n");
    let _ = writeln!(
        md,
        "Settings: arch `{}`, severity {}, pretraining {} images × {} epochs (lr {}), fine-tuning {} images × {} epochs (lr {}), \
         batch {}, seed {}; signatures on the first k = {} of {} weight layers (BN running statistics in the signature: {}; BN statistics re-estimated on clean images after patching: {}), α = {}, codec `{}`. Robust models are fine-tuned on sets where a share of {} of the images carries the corruption (the rest stay clean). Main table on {} test images, \
         sweeps/composition/continual on the first {}. All accuracies in percent. Run time {:.0} s.{}\n",
        s["arch"].as_str().unwrap_or(""), s["severity"], s["pretrain_images"], s["pretrain_epochs"], s["lr"], s["finetune_images"],
        s["finetune_epochs"], s["finetune_lr"], s["batch_size"], s["seed"], s["k"], r["layers_total"], s["bn_stats"], s["bn_adapt"], s["alpha"],
        s["codec"].as_str().unwrap_or(""), s["robust_mix"], s["test_images"], s["sweep_images"], f(&r["seconds"]),
        if s["quick"].as_bool() == Some(true) { " **Quick run** (smaller data and fewer corruptions)." } else { "" }
    );

    // Verdicts first: what the paper claims and whether this run shows it.
    let c = &r["checks"];
    let _ = writeln!(md, "## Claims\n\n| claim | measured | holds |\n|---|---|---|");
    let gain = f(&c["ra_gain_points"]);
    let drop = f(&c["ta_drop_points"]);
    let q = f(&c["int4_vs_f32_ra_points"]);
    let fam = f(&c["within_minus_across_similarity"]);
    let raised = c["transfer_raised"].as_u64().unwrap_or(0);
    let yes = |b: bool| if b { "yes" } else { "**no**" };
    let _ = writeln!(md, "| patched mean RA ≥ standard + 15 points | +{gain:.2} points | {} |", yes(gain >= 15.0));
    let _ = writeln!(md, "| patched mean TA ≥ standard − 4 points | −{drop:.2} points | {} |", yes(drop <= 4.0));
    let _ = writeln!(md, "| 4-bit signatures within 1 point of f32 (mean RA, full test set) | {q:+.2} points | {} |", yes(q.abs() <= 1.0));
    let _ = writeln!(md, "| signatures of one family more alike than across families | within − across = {fam:+.3} | {} |", yes(fam > 0.0));
    let _ = writeln!(md, "| transfer raises B's RA for most corruptions | {raised} of {} | {} |\n", names.len(), yes(2 * raised as usize > names.len()));

    let _ = writeln!(md, "## Main table (k = {}, α = {}, `{}`)\n", s["k"], s["alpha"], s["codec"].as_str().unwrap_or(""));
    let model_mb = f(&r["storage"]["model_bytes_f32"]) / 1e6;
    let _ = writeln!(md, "| corruption | standard TA | standard RA | robust TA | robust RA | patched TA | patched RA | signature MB (model {model_mb:.3} MB) |\n|---|---|---|---|---|---|---|---|");
    for n in &names {
        let _ = writeln!(
            md,
            "| {n} | {} | {} | {} | {} | {} | {} | {:.4} |",
            pct(&r["standard"]["ta"]), pct(&r["standard"]["ra"][n]), pct(&r["robust"][n]["ta"]), pct(&r["robust"][n]["ra"]),
            pct(&r["patched"][n]["ta"]), pct(&r["patched"][n]["ra"]), f(&r["storage"]["signature_file_bytes"][n]) / 1e6
        );
    }
    let _ = writeln!(md, "| **mean** | {} | {} | | | {} | {} | |\n", pct(&r["standard"]["ta"]), pct(&r["standard"]["ra_mean"]), pct(&r["patched_mean"]["ta"]), pct(&r["patched_mean"]["ra"]));
    let _ = writeln!(md, "Robust RA is each robust model on its own corruption; patched = θₛ + α·v_c.\n");

    let so = &r["sweeps"]["standard_on_subset"];
    let _ = writeln!(md, "## Sweeps\n\nOn the sweep subset the standard model has TA {} and mean RA {}.\n", pct(&so["ta"]), pct(&so["ra_mean"]));
    let sw = &r["sweeps"];
    let _ = writeln!(md, "### Number of layers k\n\n![k sweep](sweep_k.png)\n");
    sweep_table(&mut md, &sw["k"], "k");
    rws_plot::line_chart(&out.join("sweep_k.png"), "Signature depth", "weight layers k", "accuracy %", &sweep_series(&sw["k"], |r| f(&r["k"])))?;
    let _ = writeln!(md, "### Scale α (linear)\n\n![alpha sweep](sweep_alpha.png)\n");
    sweep_table(&mut md, &sw["alpha"], "alpha");
    rws_plot::line_chart(&out.join("sweep_alpha.png"), "Signature scale", "alpha", "accuracy %", &sweep_series(&sw["alpha"], |r| f(&r["alpha"])))?;
    let _ = writeln!(md, "### Bits\n\n![bits sweep](sweep_bits.png)\n\n| codec | mean TA | mean RA | payload bytes |\n|---|---|---|---|");
    let bits = |r: &Value| -> f64 {
        let c = r["codec"].as_str().unwrap_or("");
        c.strip_prefix("int").and_then(|b| b.parse().ok()).unwrap_or(32.0)
    };
    for row in sw["bits"].as_array().into_iter().flatten() {
        let _ = writeln!(md, "| {} | {} | {} | {:.0} |", row["codec"].as_str().unwrap_or(""), pct(&row["ta"]), pct(&row["ra"]), f(&row["payload_bytes_mean"]));
    }
    md.push('\n');
    rws_plot::line_chart(&out.join("sweep_bits.png"), "Quantised signatures", "bits per value", "accuracy %", &sweep_series(&sw["bits"], bits))?;

    // Observation 1: robust models differ from the clean one mostly in shallow layers.
    let ld = &r["layer_diff"];
    let layers: Vec<String> = ld[&names[0]].as_array().into_iter().flatten().map(|l| l["layer"].as_str().unwrap_or("").to_string()).collect();
    let values: Vec<Vec<f64>> = names.iter().map(|n| ld[n].as_array().into_iter().flatten().map(|l| f(&l["relative"])).collect()).collect();
    rws_plot::grouped_bar_chart(&out.join("layer_diff.png"), "‖robust − clean‖ / ‖clean‖ per layer", &layers, &names, &values, "relative difference")?;
    let _ = writeln!(md, "## Observation 1: robust and clean models differ most in shallow layers\n\n![layer diff](layer_diff.png)\n");
    let _ = writeln!(md, "| corruption | {} |\n|---|{}", layers.join(" | "), "---|".repeat(layers.len()));
    for (n, v) in names.iter().zip(&values) {
        let _ = writeln!(md, "| {n} | {} |", v.iter().map(|x| format!("{x:.4}")).collect::<Vec<_>>().join(" | "));
    }
    md.push('\n');

    // Observation 2: signatures tell corruption types apart.
    let sim: Vec<Vec<f64>> = r["similarity"]["matrix"].as_array().into_iter().flatten().map(|row| row.as_array().into_iter().flatten().map(f).collect()).collect();
    rws_plot::heatmap(&out.join("similarity.png"), "Signature cosine similarity", &names, &names, &sim)?;
    let _ = writeln!(
        md,
        "## Observation 2: signature similarity\n\n![similarity](similarity.png)\n\nMean cosine similarity within a family (noise, blur, weather, digital): {:.3}; across families: {:.3}.\n",
        f(&r["similarity"]["within_family_mean"]), f(&r["similarity"]["across_family_mean"])
    );

    let _ = writeln!(md, "## Composition: all signatures at once\n\n| scheme | α each | TA | mean RA | {} |\n|---|---|---|---|{}", names.join(" | "), "---|".repeat(names.len()));
    for row in r["composition"]["schemes"].as_array().into_iter().flatten() {
        let _ = writeln!(
            md,
            "| {} | {:.3} | {} | {} | {} |",
            row["scheme"].as_str().unwrap_or(""), f(&row["alpha_each"]), pct(&row["ta"]), pct(&row["ra_mean"]),
            names.iter().map(|n| pct(&row["ra"][n])).collect::<Vec<_>>().join(" | ")
        );
    }
    let _ = writeln!(md, "\nBest scheme (highest TA + mean RA): {}.\n", r["composition"]["best"]["scheme"].as_str().unwrap_or("-"));

    let _ = writeln!(md, "## Transfer: signatures from classes 0–4 (A) patch a model fine-tuned on classes 5–9 (B)\n\nk = {} (the classifier heads differ, so they are never patched). Accuracies on B's test classes.\n", r["transfer"]["k"]);
    let _ = writeln!(md, "| corruption | clean B TA | clean B RA | B + A's signature TA | B + A's signature RA | B's own robust TA | B's own robust RA |\n|---|---|---|---|---|---|---|");
    for n in &names {
        let t = &r["transfer"]["per_corruption"][n];
        let _ = writeln!(md, "| {n} | {} | {} | {} | {} | {} | {} |", pct(&t["clean_b"]["ta"]), pct(&t["clean_b"]["ra"]), pct(&t["patched_b_with_a"]["ta"]), pct(&t["patched_b_with_a"]["ra"]), pct(&t["robust_b"]["ta"]), pct(&t["robust_b"]["ra"]));
    }
    let _ = writeln!(md, "\n## Continual update: θₛ fine-tuned one more epoch, patched with the old signatures\n\n| corruption | updated TA | updated RA | updated + old signature TA | updated + old signature RA |\n|---|---|---|---|---|");
    for n in &names {
        let t = &r["continual"][n];
        let _ = writeln!(md, "| {n} | {} | {} | {} | {} |", pct(&t["updated"]["ta"]), pct(&t["updated"]["ra"]), pct(&t["updated_patched_old_sig"]["ta"]), pct(&t["updated_patched_old_sig"]["ra"]));
    }
    write_atomic(&out.join("REPORT.md"), &md)
}
