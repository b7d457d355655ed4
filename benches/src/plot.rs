//! SVG plots of a run, written by hand (no plotting crate): the latency
//! distribution as HdrHistogram plots it (latency against percentile, the
//! percentile axis log-scaled in "nines": 0%, 90%, 99%, 99.9%, ...) and
//! deliveries per second over time.
//!
//! The plots are drawn from the JSON summary (`rounds[].latency_percentiles`,
//! `rounds[].timeline`), so `troupe-bench compare --plots` can put troupe and
//! the bare baseline of the same run on one chart.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use serde_json::Value;

/// Points of the latency curve per halving of the tail (as HdrHistogram's
/// `outputPercentileDistribution` with 5 ticks per half distance).
const TICKS_PER_HALF: f64 = 5.0;

/// The latency distribution of a histogram of nanoseconds as
/// `[percentile, ms]` pairs: percentiles 0, then 1 - 2^(-k/5) for k = 1, 2, ...
/// while at least one sample lies beyond, then 100 (the maximum).
pub fn percentile_curve(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    let n = h.len() as f64;
    let mut curve = Vec::new();
    for k in 0..400 {
        let tail = 0.5f64.powf(f64::from(k) / TICKS_PER_HALF);
        if tail * n < 1.0 {
            break;
        }
        let q = 1.0 - tail;
        curve.push([q * 100.0, h.value_at_quantile(q) as f64 / 1e6]);
    }
    curve.push([100.0, h.max() as f64 / 1e6]);
    curve
}

/// One file to write: its name and its SVG text.
#[derive(Debug, Clone)]
pub struct Plot {
    pub file: String,
    pub svg: String,
}

/// Writes every plot into `dir` (created if needed).
pub fn write_plots(dir: &Path, plots: &[Plot]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for p in plots {
        let path = dir.join(&p.file);
        std::fs::write(&path, &p.svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// A labelled vertical line at an x value.
type Marker = (f64, String);

/// A named line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// The plots of one run's JSON summary, file names starting with `prefix`:
/// `PREFIX-latency.svg` (every round's distribution, or every group's) and
/// `PREFIX-deliveries.svg` (deliveries/s, the rounds one after the other).
/// `failover`: `PREFIX-deliveries.svg` only (sent, acked and delivered per
/// second, the kill marked). `connections`: nothing.
pub fn summary_plots(summary: &Value, prefix: &str) -> Vec<Plot> {
    let title = describe(summary);
    let mut plots = Vec::new();
    if let Some(f) = summary.get("failover") {
        let ticks = arr(&f["timeline"]);
        let rate = |key: &str| Series {
            name: format!("{key}/s"),
            points: per_second(ticks.iter().map(|t| (num(&t["t_s"]), num(&t[key])))),
        };
        let mut markers = Vec::new();
        if let Some(at) = summary["params"]["before_s"].as_f64() {
            markers.push((at, "kill -9".to_string()));
        }
        let series = vec![rate("delivered"), rate("sent"), rate("acked")];
        plots.push(Plot {
            file: format!("{prefix}-deliveries.svg"),
            svg: timeline_chart(&title, "per second", &series, &markers),
        });
        return plots;
    }
    let rounds = arr(&summary["rounds"]);
    if rounds.is_empty() {
        return plots;
    }
    let mut latency = Vec::new();
    for r in rounds {
        let groups = arr(&r["groups"]);
        if groups.is_empty() {
            let name = if rounds.len() > 1 {
                format!("{} msg/s", fmt_num(num(&r["target_rate"])))
            } else {
                prefix.to_string()
            };
            latency.push(curve_series(name, r));
        } else {
            for g in groups {
                latency.push(curve_series(
                    g["name"].as_str().unwrap_or("?").to_string(),
                    g,
                ));
            }
        }
    }
    latency.retain(|s| !s.points.is_empty());
    if !latency.is_empty() {
        plots.push(Plot {
            file: format!("{prefix}-latency.svg"),
            svg: latency_chart(&title, &latency),
        });
    }
    let (deliveries, markers) = rounds_timeline(rounds);
    let series = vec![Series {
        name: format!("{prefix} deliveries/s"),
        points: deliveries,
    }];
    plots.push(Plot {
        file: format!("{prefix}-deliveries.svg"),
        svg: timeline_chart(&title, "deliveries/s", &series, &markers),
    });
    plots
}

/// troupe and the bare baseline of the same run on one chart each:
/// `compare-latency.svg` (the headline rounds) and `compare-deliveries.svg`.
pub fn compare_plots(troupe: &Value, bare: &Value) -> Vec<Plot> {
    let title = format!(
        "troupe vs bare {}: {}",
        troupe["scenario"].as_str().unwrap_or("?"),
        describe_params(troupe)
    );
    let mut latency = Vec::new();
    let mut deliveries = Vec::new();
    for (name, s) in [("troupe", troupe), ("bare", bare)] {
        if let Some(r) = s.get("result").filter(|r| !r.is_null()) {
            latency.push(curve_series(name.to_string(), r));
        }
        let (points, _) = rounds_timeline(arr(&s["rounds"]));
        deliveries.push(Series {
            name: name.to_string(),
            points,
        });
    }
    latency.retain(|s| !s.points.is_empty());
    let mut plots = Vec::new();
    if !latency.is_empty() {
        plots.push(Plot {
            file: "compare-latency.svg".into(),
            svg: latency_chart(&title, &latency),
        });
    }
    deliveries.retain(|s| !s.points.is_empty());
    if !deliveries.is_empty() {
        plots.push(Plot {
            file: "compare-deliveries.svg".into(),
            svg: timeline_chart(&title, "deliveries/s", &deliveries, &[]),
        });
    }
    plots
}

fn arr(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn num(v: &Value) -> f64 {
    v.as_f64().unwrap_or(0.0)
}

/// `[percentile, ms]` pairs of `latency_percentiles`, as points.
fn curve_series(name: String, round: &Value) -> Series {
    let points = arr(&round["latency_percentiles"])
        .iter()
        .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
        .collect();
    Series { name, points }
}

/// Ticks `(end of the interval, count in it)` as `(t, count per second)`
/// steps: two points per interval, at its start and its end.
fn per_second(ticks: impl Iterator<Item = (f64, f64)>) -> Vec<(f64, f64)> {
    let mut points = Vec::new();
    let mut t0 = 0.0;
    for (t, count) in ticks {
        let rate = count / (t - t0).max(0.1);
        points.push((t0, rate));
        points.push((t, rate));
        t0 = t;
    }
    points
}

/// Every round's deliveries per second, the rounds one after the other; a
/// marker at the start of each round (when there are several) with its rate.
fn rounds_timeline(rounds: &[Value]) -> (Vec<(f64, f64)>, Vec<Marker>) {
    let mut points = Vec::new();
    let mut markers = Vec::new();
    let mut offset = 0.0;
    for r in rounds {
        let ticks = arr(&r["timeline"]);
        if rounds.len() > 1 {
            markers.push((offset, format!("{}/s", fmt_num(num(&r["target_rate"])))));
        }
        let steps = per_second(ticks.iter().map(|t| (num(&t["t_s"]), num(&t["delivered"]))));
        let end = steps.last().map_or(0.0, |p| p.0);
        points.extend(steps.into_iter().map(|(t, v)| (t + offset, v)));
        offset += end;
    }
    (points, markers)
}

/// "troupe fanout: S=100 P=1 R=1000/s D=10s".
fn describe(summary: &Value) -> String {
    format!(
        "{} {}: {}",
        summary["target"].as_str().unwrap_or("?"),
        summary["scenario"].as_str().unwrap_or("?"),
        describe_params(summary)
    )
}

fn describe_params(summary: &Value) -> String {
    let p = &summary["params"];
    let mut parts = Vec::new();
    for (key, label, unit) in [
        ("nodes", "N", ""),
        ("rooms", "M", ""),
        ("members", "K", ""),
        ("subscribers", "S", ""),
        ("publishers", "P", ""),
        ("rate", "R", "/s"),
        ("rate_per_member", "r", "/s"),
        ("duration_s", "D", "s"),
        ("payload", "payload", "B"),
    ] {
        if let Some(v) = p[key].as_f64() {
            if key == "payload" && v == 0.0 {
                continue;
            }
            parts.push(format!("{label}={}{unit}", fmt_num(v)));
        }
    }
    if p["find_max"].as_bool() == Some(true) {
        parts.push("find-max".into());
    }
    parts.join(" ")
}

/// A number as a label: integers without decimals, else up to 3 significant digits.
fn fmt_num(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if (v - v.round()).abs() < 1e-9 && v.abs() < 1e15 {
        let n = v.round() as i64;
        // Thousands separated by commas.
        let digits = n.unsigned_abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        if n < 0 {
            out.insert(0, '-');
        }
        out
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        let s = format!("{v:.3}");
        if s == "0.000" {
            format!("{v:.1e}")
        } else {
            s
        }
    }
}

/// "99.9%" for the `nines`-th decade of the percentile axis.
fn nines_label(nines: i32) -> String {
    match nines {
        0 => "0%".into(),
        1 => "90%".into(),
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
    }
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

const COLORS: [&str; 10] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

/// An axis: where values go (0..1 of the plot area) and the labelled ticks.
#[derive(Debug, Clone)]
struct Axis {
    lo: f64,
    hi: f64,
    log: bool,
    ticks: Vec<(f64, String)>,
    label: String,
}

impl Axis {
    fn fraction(&self, v: f64) -> f64 {
        let (lo, hi, v) = if self.log {
            (self.lo.log10(), self.hi.log10(), v.max(self.lo).log10())
        } else {
            (self.lo, self.hi, v)
        };
        if hi > lo {
            ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// 0 to a round number above `max`, ticks at steps of 1, 2 or 5 x 10^k:
    /// the smallest step with at most 7 of them above 0.
    fn linear(max: f64, label: &str) -> Axis {
        let max = if max > 0.0 && max.is_finite() {
            max
        } else {
            1.0
        };
        let mag = 10f64.powf((max / 10.0).log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
            .into_iter()
            .map(|m| m * mag)
            .find(|s| (max / s).ceil() <= 7.0)
            .unwrap_or(100.0 * mag);
        let hi = (max / step).ceil() * step;
        let mut ticks = Vec::new();
        let mut i = 0.0;
        while i * step <= hi * (1.0 + 1e-9) {
            ticks.push((i * step, fmt_num(i * step)));
            i += 1.0;
        }
        Axis {
            lo: 0.0,
            hi,
            log: false,
            ticks,
            label: label.into(),
        }
    }

    /// Whole decades around [min, max]; ticks at 1, 2 and 5 x 10^k when
    /// there are at most 3 decades.
    fn log(min: f64, max: f64, label: &str) -> Axis {
        let lo = 10f64.powf(min.log10().floor());
        let hi = 10f64.powf(max.log10().ceil()).max(lo * 10.0);
        let decades = (hi / lo).log10().round() as i32;
        let mut ticks = Vec::new();
        let mut d = lo;
        let tick_label = |v: f64| {
            if v >= 1.0 {
                fmt_num(v)
            } else {
                // 0.001, 0.02, 0.5: as many decimals as the value needs.
                let decimals = (-v.log10()).ceil().max(1.0) as usize;
                format!("{v:.decimals$}")
            }
        };
        while d <= hi * (1.0 + 1e-9) {
            ticks.push((d, tick_label(d)));
            if decades <= 3 {
                for m in [2.0, 5.0] {
                    if d * m < hi {
                        ticks.push((d * m, tick_label(d * m)));
                    }
                }
            }
            d *= 10.0;
        }
        Axis {
            lo,
            hi,
            log: true,
            ticks,
            label: label.into(),
        }
    }
}

/// Latency (ms) against percentile; the percentile axis in nines.
fn latency_chart(title: &str, series: &[Series]) -> String {
    // x = log10(1 / (1 - q)): 0% at 0, 90% at 1, 99% at 2, ...
    let to_x = |p: f64| {
        if p >= 100.0 {
            None
        } else {
            Some((100.0 / (100.0 - p)).log10())
        }
    };
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().filter_map(|(p, _)| to_x(*p)))
        .fold(0.0f64, f64::max)
        .ceil()
        .clamp(2.0, 7.0);
    let mut ticks: Vec<(f64, String)> = (0..=x_max as i32)
        .map(|n| (f64::from(n), nines_label(n)))
        .collect();
    ticks.insert(1, (2f64.log10(), "50%".into()));
    let x = Axis {
        lo: 0.0,
        hi: x_max,
        log: false,
        ticks,
        label: "percentile (the maximum at the right edge)".into(),
    };
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let (min, max) = values.fold((f64::INFINITY, 0.0f64), |(lo, hi), v| {
        (if v > 0.0 { lo.min(v) } else { lo }, hi.max(v))
    });
    let y = if min.is_finite() && max / min > 30.0 {
        Axis::log(min, max, "latency, ms (log scale)")
    } else {
        Axis::linear(max, "latency, ms")
    };
    let mapped: Vec<Series> = series
        .iter()
        .map(|s| Series {
            name: s.name.clone(),
            points: s
                .points
                .iter()
                .map(|&(p, v)| (to_x(p).unwrap_or(x_max).min(x_max), v))
                .collect(),
        })
        .collect();
    render(&Chart {
        title: format!("Latency distribution, {title}"),
        x,
        y,
        series: mapped,
        markers: Vec::new(),
    })
}

/// Counts per second (steps) against seconds.
fn timeline_chart(title: &str, y_label: &str, series: &[Series], markers: &[Marker]) -> String {
    let t_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0f64, f64::max);
    let v_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    render(&Chart {
        title: format!("{y_label} over time, {title}"),
        x: Axis::linear(t_max, "seconds since the round started"),
        y: Axis::linear(v_max, y_label),
        series: series.to_vec(),
        markers: markers.to_vec(),
    })
}

struct Chart {
    title: String,
    x: Axis,
    y: Axis,
    series: Vec<Series>,
    /// Vertical lines at x, labelled.
    markers: Vec<Marker>,
}

const WIDTH: f64 = 860.0;
const HEIGHT: f64 = 480.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 44.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;

fn render(c: &Chart) -> String {
    let pw = WIDTH - LEFT - RIGHT;
    let ph = HEIGHT - TOP - BOTTOM;
    let px = |v: f64| LEFT + c.x.fraction(v) * pw;
    let py = |v: f64| TOP + ph - c.y.fraction(v) * ph;
    let mut s = String::new();
    // Writing into a String cannot fail.
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        xml_escape(&c.title)
    );
    // Grid and tick labels.
    let _ = writeln!(s, r##"<g stroke="#e0e0e0" stroke-width="1">"##);
    for (v, _) in &c.x.ticks {
        let x = px(*v);
        let _ = writeln!(
            s,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/>"#,
            TOP + ph
        );
    }
    for (v, _) in &c.y.ticks {
        let y = py(*v);
        let _ = writeln!(
            s,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/>"#,
            LEFT + pw
        );
    }
    let _ = writeln!(s, "</g>");
    let _ = writeln!(
        s,
        r#"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
    );
    let _ = writeln!(s, r#"<g fill="black">"#);
    for (v, label) in &c.x.ticks {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            px(*v),
            TOP + ph + 16.0,
            xml_escape(label)
        );
    }
    for (v, label) in &c.y.ticks {
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            LEFT - 6.0,
            py(*v) + 4.0,
            xml_escape(label)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        LEFT + pw / 2.0,
        HEIGHT - 14.0,
        xml_escape(&c.x.label)
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{0:.1}" text-anchor="middle" transform="rotate(-90 18 {0:.1})">{1}</text>"#,
        TOP + ph / 2.0,
        xml_escape(&c.y.label)
    );
    let _ = writeln!(s, "</g>");
    for (at, label) in &c.markers {
        let x = px(*at);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#888" stroke-dasharray="4 3"/>"##,
            TOP + ph
        );
        let _ = writeln!(
            s,
            r##"<text x="{:.1}" y="{:.1}" font-size="10" fill="#555">{}</text>"##,
            x + 3.0,
            TOP + 12.0,
            xml_escape(label)
        );
    }
    for (i, series) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut points = String::new();
        for &(x, y) in &series.points {
            let _ = write!(points, "{:.1},{:.1} ", px(x), py(y));
        }
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" stroke-linejoin="round" points="{}"><title>{}</title></polyline>"#,
            points.trim_end(),
            xml_escape(&series.name)
        );
    }
    // Legend, top left inside the plot.
    let _ = writeln!(s, "<g>");
    for (i, series) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let y = TOP + 16.0 + 16.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{color}" stroke-width="3"/>"#,
            LEFT + 10.0,
            LEFT + 30.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            LEFT + 36.0,
            y + 4.0,
            xml_escape(&series.name)
        );
    }
    let _ = writeln!(s, "</g>");
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A small XML check: one root `svg` element, every tag closed in order,
    /// attributes `name="value"` without a raw `<` or a bare `&`, text
    /// without a bare `&` or `>`. Returns the element names in order.
    fn check_xml(text: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut rest = text.trim();
        let mut roots = 0;
        let check_entities = |s: &str| {
            for (i, _) in s.match_indices('&') {
                let tail = &s[i..];
                let end = tail.find(';').expect("an entity ends with ;");
                let name = &tail[1..end];
                assert!(
                    ["amp", "lt", "gt", "quot", "apos"].contains(&name),
                    "unknown entity &{name};"
                );
            }
        };
        while !rest.is_empty() {
            let Some(open) = rest.find('<') else {
                assert!(rest.trim().is_empty(), "text after the root: {rest:?}");
                break;
            };
            let text_part = &rest[..open];
            assert!(!text_part.contains('>'), "a raw > in text: {text_part:?}");
            check_entities(text_part);
            if !text_part.trim().is_empty() {
                assert!(!stack.is_empty(), "text outside the root: {text_part:?}");
            }
            let close = rest[open..].find('>').expect("a tag ends with >") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "a < inside a tag: {tag:?}");
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack.pop().expect("a closing tag with nothing open");
                assert_eq!(top, name.trim(), "closing tag out of order");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let (name, mut attrs) = body.split_once(char::is_whitespace).unwrap_or((body, ""));
                assert!(
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()),
                    "bad element name {name:?}"
                );
                // name="value" pairs.
                loop {
                    attrs = attrs.trim_start();
                    if attrs.is_empty() {
                        break;
                    }
                    let eq = attrs.find("=\"").expect("an attribute is name=\"value\"");
                    let attr = &attrs[..eq];
                    assert!(
                        attr.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == ':'),
                        "bad attribute name {attr:?}"
                    );
                    let value_end = attrs[eq + 2..].find('"').expect("a closing quote") + eq + 2;
                    check_entities(&attrs[eq + 2..value_end]);
                    attrs = &attrs[value_end + 1..];
                }
                if stack.is_empty() {
                    roots += 1;
                }
                elements.push(name.to_string());
                if !self_closing {
                    stack.push(name.to_string());
                }
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
        assert_eq!(roots, 1, "one root element");
        assert_eq!(elements.first().map(String::as_str), Some("svg"));
        elements
    }

    fn histogram() -> Histogram<u64> {
        let mut h = crate::report::new_histogram();
        for i in 1..=10_000u64 {
            // 0.1 ms to ~10 ms, a long tail.
            h.record(100_000 + i * i / 10).unwrap();
        }
        h
    }

    fn round(rate: f64, h: &Histogram<u64>) -> Value {
        json!({
            "target_rate": rate,
            "latency_percentiles": percentile_curve(h),
            "timeline": [
                {"t_s": 1.0, "delivered": 1000, "published": 10},
                {"t_s": 2.001, "delivered": 1200, "published": 12},
                {"t_s": 2.4, "delivered": 30, "published": 0},
            ],
        })
    }

    fn summary(target: &str, rounds: Vec<Value>) -> Value {
        json!({
            "scenario": "fanout",
            "target": target,
            "params": {"subscribers": 100, "publishers": 1, "rate": 1000.0, "duration_s": 10.0},
            "result": rounds.last().cloned(),
            "rounds": rounds,
        })
    }

    #[test]
    fn the_curve_rises_from_the_minimum_to_the_maximum() {
        let h = histogram();
        let curve = percentile_curve(&h);
        assert_eq!(curve[0][0], 0.0);
        assert_eq!(curve.last().unwrap()[0], 100.0);
        assert!((curve.last().unwrap()[1] - h.max() as f64 / 1e6).abs() < 1e-9);
        // 10,000 samples: about log2(10,000) x 5 points before the maximum.
        assert!((60..=75).contains(&curve.len()), "{} points", curve.len());
        for w in curve.windows(2) {
            assert!(w[0][0] < w[1][0] && w[0][1] <= w[1][1], "{w:?}");
        }
        assert!(percentile_curve(&crate::report::new_histogram()).is_empty());
    }

    #[test]
    fn a_run_plots_as_well_formed_svg() {
        let h = histogram();
        let s = summary("troupe", vec![round(1000.0, &h)]);
        let plots = summary_plots(&s, "troupe");
        let files: Vec<&str> = plots.iter().map(|p| p.file.as_str()).collect();
        assert_eq!(files, ["troupe-latency.svg", "troupe-deliveries.svg"]);
        for p in &plots {
            let elements = check_xml(&p.svg);
            assert_eq!(
                elements.iter().filter(|e| *e == "polyline").count(),
                1,
                "{}: one line",
                p.file
            );
            assert!(
                p.svg.contains("troupe fanout: S=100 P=1 R=1,000/s D=10s"),
                "{}",
                p.svg
            );
        }
        assert!(plots[0].svg.contains(">99.9%<"));
        // The latency spans two decades: a log scale.
        assert!(plots[0].svg.contains("log scale"));
    }

    #[test]
    fn find_max_rounds_and_comparisons_plot_one_line_each() {
        let h = histogram();
        let troupe = summary(
            "troupe",
            vec![round(100.0, &h), round(150.0, &h), round(225.0, &h)],
        );
        let plots = summary_plots(&troupe, "troupe");
        let latency = check_xml(&plots[0].svg);
        assert_eq!(latency.iter().filter(|e| *e == "polyline").count(), 3);
        assert!(plots[0].svg.contains("225 msg/s"));
        // The deliveries chart marks where each round starts.
        assert_eq!(plots[1].svg.matches("stroke-dasharray").count(), 3);
        check_xml(&plots[1].svg);

        let bare = summary("bare", vec![round(1000.0, &h)]);
        let plots = compare_plots(&troupe, &bare);
        assert_eq!(plots.len(), 2);
        for p in &plots {
            let elements = check_xml(&p.svg);
            assert_eq!(elements.iter().filter(|e| *e == "polyline").count(), 2);
            assert!(p.svg.contains(">troupe<") && p.svg.contains(">bare<"));
        }
    }

    #[test]
    fn titles_are_escaped_and_failover_marks_the_kill() {
        let s = json!({
            "scenario": "failover",
            "target": "troupe",
            "params": {"nodes": 3, "rooms": 10, "members": 20, "rate_per_member": 2.0, "before_s": 3.0},
            "failover": {"timeline": [
                {"t_s": 1.0, "sent": 400, "acked": 400, "delivered": 8000},
                {"t_s": 2.0, "sent": 400, "acked": 390, "delivered": 7900},
            ]},
            "rounds": [],
        });
        let plots = summary_plots(&s, "troupe");
        assert_eq!(plots.len(), 1);
        let elements = check_xml(&plots[0].svg);
        assert_eq!(elements.iter().filter(|e| *e == "polyline").count(), 3);
        assert!(plots[0].svg.contains("kill -9"));
        assert!(plots[0].svg.contains("N=3 M=10 K=20 r=2/s"));
        assert_eq!(xml_escape("a<b & \"c\""), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(fmt_num(1_500_000.0), "1,500,000");
        assert_eq!(fmt_num(2.5), "2.50");
        assert_eq!(fmt_num(0.25), "0.250");
        assert_eq!(nines_label(4), "99.99%");
        let a = Axis::linear(87.0, "x");
        assert_eq!(a.hi, 100.0);
        assert_eq!(a.ticks.len(), 6);
        let a = Axis::linear(10.002, "x");
        assert_eq!(a.hi, 12.0);
        assert_eq!(a.ticks.len(), 7);
        let a = Axis::linear(99_823.0, "x");
        assert_eq!(a.hi, 100_000.0);
        let l = Axis::log(0.03, 42.0, "y");
        assert_eq!((l.lo, l.hi), (0.01, 100.0));
        let labels: Vec<&str> = l.ticks.iter().map(|t| t.1.as_str()).collect();
        assert_eq!(labels, ["0.01", "0.1", "1", "10", "100"]);
    }
}
