//! SVG charts from the results every server's run left in `report::out_dir()`.
//!
//! Every chart sets the servers side by side, so each function first gathers the rows of one
//! section from every server and skips the chart (with a printed line) when none are there:
//! a run with BENCH_ONLY leaves some sections out, and that is not an error.

use std::error::Error;
use std::path::Path;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::report;

type Res<T> = Result<T, Box<dyn Error>>;
/// Every server's results, as `report::load_all` gives them.
type All = [(String, report::Rows)];
/// (latency µs, quantile) points of one CDF.
type Curve = Vec<(f64, f64)>;
/// Draws one chart to the path; false when its data is absent (and it said so).
type Chart = fn(&All, &Path) -> Res<bool>;
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

const PANEL_W: u32 = 600;
const PANEL_H: u32 = 400;
/// Room above the panels for the figure's title and its legend.
const HEAD_H: u32 = 90;

/// The waiting methods the contention bench compares, in the order they are drawn, so each
/// keeps its colour from chart to chart.
const METHODS: [&str; 3] = ["BLOCK", "polling 10 ms", "pub/sub"];

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

pub fn draw() {
    let all = report::load_all();
    println!("{} results files", all.len());
    let dir = report::out_dir();
    let charts: [(&str, Chart); 7] = [
        ("instruction-ratios.svg", instruction_ratios),
        ("throughput-ratios.svg", throughput_ratios),
        ("cpu-ratios.svg", cpu_ratios),
        ("other-ratios.svg", other_ratios),
        ("handoff-latency.svg", handoff_latency),
        ("contention.svg", contention),
        ("handoff-cpu.svg", handoff_cpu),
    ];
    for (name, chart) in charts {
        let path = dir.join(name);
        match chart(&all, &path) {
            Ok(true) => println!("wrote {}", path.display()),
            Ok(false) => {}
            // One chart failing (a full disk, an odd value) should not cost the others.
            Err(e) => println!("{name}: not drawn: {e}"),
        }
    }
}

/// Insertion-ordered set: the order the bench wrote things in is the order worth showing.
fn push_new(v: &mut Vec<String>, s: &str) {
    if !v.iter().any(|x| x == s) {
        v.push(s.to_string());
    }
}

fn servers_with(all: &All, section: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (server, rows) in all {
        if rows.iter().any(|r| r.0 == section && r.3.is_finite()) {
            push_new(&mut v, server);
        }
    }
    v
}

fn value(all: &All, server: &str, section: &str, series: &str, x: &str) -> Option<f64> {
    all.iter()
        .filter(|(s, _)| s == server)
        .flat_map(|(_, rows)| rows.iter())
        .find(|r| r.0 == section && r.1 == series && r.2 == x)
        .map(|r| r.3)
        .filter(|v| v.is_finite())
}

/// The operation a ratio series is about, named as the throughput table names it.
fn operation(series: &str) -> String {
    let module = series.split(" / ").next().unwrap_or(series);
    match module {
        "LOCK.ACQUIRE" => "acquire".into(),
        "LOCK.RENEW" => "renew".into(),
        "LOCK.RELEASE" => "release".into(),
        "LOCK.ACQUIRE + LOCK.RELEASE" => "lock cycle".into(),
        other => other.into(),
    }
}

/// What the module is compared with in a ratio series.
fn contender(series: &str) -> String {
    let c = series.split_once(" / ").map_or(series, |(_, c)| c);
    c.replace("floor: ", "")
}

/// Axis labels have about 190 px per group; the replica runs' x is too long for that.
fn short_x(x: &str) -> String {
    x.replace(" with one replica attached", ", replica")
}

/// Methods in their fixed order, then any the bench adds later, in the order found.
fn methods(all: &All, sections: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for (_, rows) in all {
        for r in rows.iter().filter(|r| sections.contains(&r.0.as_str())) {
            push_new(&mut found, &r.1);
        }
    }
    let mut v: Vec<String> = METHODS
        .iter()
        .filter(|m| found.iter().any(|f| f == *m))
        .map(|m| m.to_string())
        .collect();
    for f in found {
        push_new(&mut v, &f);
    }
    v
}

/// "<clients> clients, <cs> ms" as numbers, to sort configs by load rather than as text.
fn config_key(config: &str) -> (u64, u64) {
    let mut nums = config
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(u64::MAX));
    (
        nums.next().unwrap_or(u64::MAX),
        nums.next().unwrap_or(u64::MAX),
    )
}

fn fmt_num(v: f64) -> String {
    let s = fmt_raw(v);
    // "10.0" and "1.0k" read better as "10" and "1k" on log ticks.
    match s.find(".0") {
        Some(i) if s[i + 2..].chars().all(|c| !c.is_ascii_digit()) => {
            format!("{}{}", &s[..i], &s[i + 2..])
        }
        _ => s,
    }
}

fn fmt_raw(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A figure: title, one legend row for every panel, then `n` panels two to a row (one to a
/// row when `cols` is 1); `panel` draws panel i.
fn figure(
    path: &Path,
    title: &str,
    legend: &[Key],
    n: usize,
    cols: usize,
    mut panel: impl FnMut(usize, &Area) -> Res<()>,
) -> Res<()> {
    let cols = cols.min(n).max(1);
    let rows = n.div_ceil(cols);
    // A lone column gets more width: its panels hold a dozen or more bars.
    let w = if cols == 1 { 1000 } else { PANEL_W };
    let size = (w * cols as u32, HEAD_H + PANEL_H * rows as u32);
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    let (head, body) = root.split_vertically(HEAD_H);
    head.draw(&Text::new(
        title.to_string(),
        (size.0 as i32 / 2, 12),
        ("sans-serif", 24)
            .into_font()
            .style(FontStyle::Bold)
            .into_text_style(&head)
            .pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    draw_legend(&head, legend, 56)?;
    for (i, area) in body.split_evenly((rows, cols)).iter().enumerate().take(n) {
        panel(i, area)?;
    }
    root.present()?;
    Ok(())
}

/// A legend entry: label, colour, and whether it names a (dashed) line rather than bars.
type Key = (String, RGBColor, bool);

fn keys(labels: &[String]) -> Vec<Key> {
    labels
        .iter()
        .enumerate()
        .map(|(i, l)| (l.clone(), color(i), false))
        .collect()
}

/// Legend as one centred row of swatches, shared by all panels so none is covered by it.
fn draw_legend(area: &Area, entries: &[Key], y: i32) -> Res<()> {
    let font = ("sans-serif", 16).into_font();
    // The naive font estimate (no font files with SVG) is close enough for spacing.
    let widths: Vec<i32> = entries
        .iter()
        .map(|(s, _, _)| {
            30 + area
                .estimate_text_size(s, &TextStyle::from(font.clone()))
                .map_or(100, |d| d.0 as i32)
        })
        .collect();
    let total: i32 = widths.iter().sum::<i32>() + 20 * entries.len().saturating_sub(1) as i32;
    let mut x = (area.dim_in_pixel().0 as i32 - total).max(0) / 2;
    for ((label, c, line), w) in entries.iter().zip(widths) {
        if *line {
            area.draw(&PathElement::new([(x, y), (x + 8, y)], c.stroke_width(2)))?;
            area.draw(&PathElement::new(
                [(x + 12, y), (x + 20, y)],
                c.stroke_width(2),
            ))?;
        } else {
            area.draw(&Rectangle::new([(x, y - 8), (x + 20, y + 8)], c.filled()))?;
        }
        area.draw(&Text::new(
            label.clone(),
            (x + 26, y),
            font.clone()
                .into_text_style(area)
                .pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        x += w + 20;
    }
    Ok(())
}

fn no_data(area: &Area, title: &str) -> Res<()> {
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        format!("{title}: no data"),
        (w as i32 / 2, h as i32 / 2),
        ("sans-serif", 16)
            .into_font()
            .into_text_style(area)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

#[derive(Clone, Copy)]
enum Scale {
    /// From zero: amounts.
    Zero,
    /// Around the data and the reference lines: ratios near 1, where 5% must show.
    Zoom,
    /// Logarithmic: methods whose rates differ by orders of magnitude.
    Log,
}

/// One panel of grouped bars: `groups` along x, `bars` slots per group, each value at
/// (group, slot), coloured by slot.
struct Bars<'a> {
    title: String,
    groups: Vec<String>,
    bars: usize,
    values: Vec<(usize, usize, f64)>,
    colors: &'a [RGBColor],
    y_desc: &'a str,
    scale: Scale,
    /// Horizontal reference lines: value and label.
    refs: &'a [(f64, &'a str)],
}

fn bar_panel(area: &Area, b: &Bars) -> Res<()> {
    let vals: Vec<f64> = b
        .values
        .iter()
        .map(|v| v.2)
        .filter(|v| v.is_finite() && (!matches!(b.scale, Scale::Log) || *v > 0.0))
        .collect();
    if vals.is_empty() || b.groups.is_empty() {
        return no_data(area, &b.title);
    }
    let min = vals.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = vals.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let n = b.groups.len() as f64;
    let groups = b.groups.clone();
    let x_spec = GroupAxis(n);
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&b.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64);
    match b.scale {
        Scale::Log => {
            let (lo, hi) = (min / 2.0, max * 3.0);
            let chart = builder.build_cartesian_2d(x_spec, (lo..hi).log_scale())?;
            bars_in(chart, b, &groups, lo, (lo, hi))
        }
        Scale::Zero => {
            let hi = max.max(0.0) * 1.15;
            let hi = if hi > 0.0 { hi } else { 1.0 };
            let chart = builder.build_cartesian_2d(x_spec, 0.0..hi)?;
            bars_in(chart, b, &groups, 0.0, (0.0, hi))
        }
        Scale::Zoom => {
            let lo = b.refs.iter().map(|r| r.0).fold(min, f64::min);
            let hi = b.refs.iter().map(|r| r.0).fold(max, f64::max);
            let span = (hi - lo).max(0.1);
            let lo = ((lo - 0.15 * span).max(0.0) * 20.0).floor() / 20.0;
            let hi = ((hi + 0.2 * span) * 20.0).ceil() / 20.0;
            let chart = builder.build_cartesian_2d(x_spec, lo..hi)?;
            bars_in(chart, b, &groups, lo, (lo, hi))
        }
    }
}

/// An x axis of `n` groups, one unit wide each, with a tick (and label) at each centre.
/// Plotters' own f64 axis with key points has no default formatting, which the generic
/// `bars_in` needs.
struct GroupAxis(f64);

impl Ranged for GroupAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        limit.0 + ((limit.1 - limit.0) as f64 * v / self.0).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        (0..self.0 as usize).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> std::ops::Range<f64> {
        0.0..self.0
    }
}

/// The drawing part of `bar_panel`, generic over the y axis so the log and linear panels
/// share it.
fn bars_in<'a, Y>(
    mut chart: ChartContext<'a, SVGBackend<'a>, Cartesian2d<GroupAxis, Y>>,
    b: &Bars,
    groups: &[String],
    base: f64,
    (lo, hi): (f64, f64),
) -> Res<()>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let n = groups.len() as f64;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(BLACK.mix(0.04))
        .x_label_formatter(&|x| {
            let i = x.floor().max(0.0) as usize;
            groups.get(i).map_or_else(String::new, |g| short_x(g))
        })
        .x_label_style(("sans-serif", 14))
        .y_label_style(("sans-serif", 13))
        .y_label_formatter(&|y| fmt_num(*y))
        .y_desc(b.y_desc)
        .draw()?;
    // Reference lines under the bars, so they never cross a bar's value.
    for (i, &(r, _)) in b.refs.iter().enumerate() {
        if r < lo || r > hi {
            continue;
        }
        let c = ref_color(i);
        chart.draw_series(DashedLineSeries::new(
            [(0.0, r), (n, r)],
            6,
            4,
            c.stroke_width(2),
        ))?;
    }
    let slot = 0.8 / b.bars.max(1) as f64;
    for &(g, s, v) in &b.values {
        if !v.is_finite() || v < lo {
            continue;
        }
        let x0 = g as f64 + 0.1 + s as f64 * slot;
        let (x0, x1) = (x0 + 0.06 * slot, x0 + 0.94 * slot);
        let c = b.colors[s % b.colors.len()];
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x0, base), (x1, v.min(hi))],
            c.filled(),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            // Three decimals below 10: a 0.947 must not read as the 0.95 target.
            if v.abs() < 10.0 {
                format!("{v:.3}")
            } else {
                fmt_num(v)
            },
            ((x0 + x1) / 2.0, v.min(hi)),
            ("sans-serif", 11)
                .into_font()
                .into_text_style(chart.plotting_area())
                .pos(Pos::new(HPos::Center, VPos::Bottom)),
        )))?;
    }
    Ok(())
}

/// The first reference is the main one (equal speed); later ones are targets.
fn ref_color(i: usize) -> RGBColor {
    if i == 0 {
        BLACK
    } else {
        RED
    }
}

const FLOOR_REFS: [(f64, &str); 2] = [(1.0, "1.0 = equal"), (0.95, "0.95 = the 5% target")];
/// Against scripts and core commands the 5% target does not apply; only equality matters.
const OTHER_REFS: [(f64, &str); 1] = [(1.0, "1.0 = equal")];

/// Ratio panels, one per series `keep` accepts, x groups, one bar per server.
fn ratio_chart(
    all: &All,
    path: &Path,
    section: &str,
    keep: fn(&str) -> bool,
    refs: &[(f64, &str)],
    title: &str,
    y_desc: &str,
) -> Res<bool> {
    let servers = servers_with(all, section);
    let mut series = Vec::new();
    for (_, rows) in all {
        for r in rows.iter().filter(|r| r.0 == section && keep(&r.1)) {
            push_new(&mut series, &r.1);
        }
    }
    if series.is_empty() {
        println!("{}: no {section} rows, skipped", file_name(path));
        return Ok(false);
    }
    let colors: Vec<RGBColor> = (0..servers.len()).map(color).collect();
    let mut legend = keys(&servers);
    for (i, (_, label)) in refs.iter().enumerate() {
        legend.push((label.to_string(), ref_color(i), true));
    }
    figure(path, title, &legend, series.len(), 2, |i, area| {
        let s = &series[i];
        let mut groups = Vec::new();
        for (_, rows) in all {
            for r in rows.iter().filter(|r| r.0 == section && &r.1 == s) {
                push_new(&mut groups, &r.2);
            }
        }
        let mut values = Vec::new();
        for (gi, g) in groups.iter().enumerate() {
            for (si, server) in servers.iter().enumerate() {
                if let Some(v) = value(all, server, section, s, g) {
                    values.push((gi, si, v));
                }
            }
        }
        let bars = Bars {
            title: format!("{} vs {}", operation(s), contender(s)),
            groups,
            bars: servers.len(),
            values,
            colors: &colors,
            y_desc,
            scale: Scale::Zoom,
            refs,
        };
        bar_panel(area, &bars)
    })?;
    Ok(true)
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

fn vs_floor(series: &str) -> bool {
    series.contains("/ floor:")
}

fn throughput_ratios(all: &All, path: &Path) -> Res<bool> {
    ratio_chart(
        all,
        path,
        "ratio",
        vs_floor,
        &FLOOR_REFS,
        "Module ops/s ÷ floor ops/s (above 1 = module faster)",
        "throughput ratio",
    )
}

fn instruction_ratios(all: &All, path: &Path) -> Res<bool> {
    ratio_chart(
        all,
        path,
        "instructions-ratio",
        vs_floor,
        &FLOOR_REFS,
        "Floor instructions ÷ module instructions per command (callgrind; above 1 = module cheaper)",
        "instruction ratio",
    )
}

fn cpu_ratios(all: &All, path: &Path) -> Res<bool> {
    ratio_chart(
        all,
        path,
        "cpu-ratio",
        vs_floor,
        &FLOOR_REFS,
        "Floor server CPU/op ÷ module server CPU/op (above 1 = module cheaper)",
        "CPU ratio",
    )
}

fn other_ratios(all: &All, path: &Path) -> Res<bool> {
    ratio_chart(
        all,
        path,
        "ratio",
        |s| !vs_floor(s),
        &OTHER_REFS,
        "Module ops/s ÷ the scripts and core commands it replaces (above 1 = module faster)",
        "throughput ratio",
    )
}

/// Splits a "handoff" x into its config and quantile.
fn config_q(x: &str) -> Option<(&str, f64)> {
    let (config, q) = x.split_once(" @ ")?;
    Some((config, q.trim().parse().ok()?))
}

fn handoff_latency(all: &All, path: &Path) -> Res<bool> {
    let servers = servers_with(all, "handoff");
    if servers.is_empty() {
        println!("{}: no handoff rows, skipped", file_name(path));
        return Ok(false);
    }
    let mut configs = Vec::new();
    for (_, rows) in all {
        for r in rows.iter().filter(|r| r.0 == "handoff") {
            if let Some((c, _)) = config_q(&r.2) {
                push_new(&mut configs, c);
            }
        }
    }
    configs.sort_by_key(|c| config_key(c));
    // Columns: every client count at a 1 ms critical section, the case where waiters really
    // queue; failing that, every config of the first critical section found.
    let cs = if configs.iter().any(|c| config_key(c).1 == 1) {
        1
    } else {
        configs.first().map_or(0, |c| config_key(c).1)
    };
    let columns: Vec<String> = configs
        .into_iter()
        .filter(|c| config_key(c).1 == cs)
        .collect();
    let methods = methods(all, &["handoff"]);
    // Curves per (server, column, method), sorted by quantile.
    let mut curves: Vec<Vec<Vec<Curve>>> =
        vec![vec![vec![Vec::new(); methods.len()]; columns.len()]; servers.len()];
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for (server, rows) in all {
        let Some(si) = servers.iter().position(|s| s == server) else {
            continue;
        };
        for r in rows.iter().filter(|r| r.0 == "handoff") {
            let Some((c, q)) = config_q(&r.2) else {
                continue;
            };
            let (Some(ci), Some(mi)) = (
                columns.iter().position(|x| x == c),
                methods.iter().position(|m| m == &r.1),
            ) else {
                continue;
            };
            // A log axis has no place for zero or below.
            if r.3.is_finite() && r.3 > 0.0 {
                curves[si][ci][mi].push((r.3, q));
                lo = lo.min(r.3);
                hi = hi.max(r.3);
            }
        }
    }
    if !lo.is_finite() {
        println!(
            "{}: no positive handoff latencies, skipped",
            file_name(path)
        );
        return Ok(false);
    }
    for c in curves.iter_mut().flatten().flatten() {
        c.sort_by(|a, b| a.1.total_cmp(&b.1));
    }
    // One x range for every panel, so panels compare at a glance.
    let (lo, hi) = (lo / 1.5, hi * 1.5);
    let legend = keys(&methods);
    let n = servers.len() * columns.len();
    figure(
        path,
        "Lock hand-off latency under contention (CDF)",
        &legend,
        n,
        columns.len(),
        |i, area| {
            let (si, ci) = (i / columns.len(), i % columns.len());
            let title = format!("{}, {}", servers[si], columns[ci]);
            let lines = &curves[si][ci];
            if lines.iter().all(|l| l.is_empty()) {
                return no_data(area, &title);
            }
            let mut chart = ChartBuilder::on(area)
                .caption(&title, ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(56)
                .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
            chart
                .configure_mesh()
                .light_line_style(BLACK.mix(0.04))
                .x_desc("hand-off latency, µs (log)")
                .y_desc("quantile")
                .x_label_formatter(&|x| fmt_num(*x))
                .y_label_formatter(&|y| format!("{y:.1}"))
                .x_label_style(("sans-serif", 13))
                .y_label_style(("sans-serif", 13))
                .draw()?;
            for (mi, line) in lines.iter().enumerate() {
                if !line.is_empty() {
                    chart.draw_series(LineSeries::new(
                        line.iter().copied(),
                        color(mi).stroke_width(2),
                    ))?;
                }
            }
            Ok(())
        },
    )?;
    Ok(true)
}

/// One panel per server: configs along x, a bar per method.
fn method_bars(
    all: &All,
    path: &Path,
    section: &str,
    title: &str,
    y_desc: &str,
    scale: Scale,
) -> Res<bool> {
    let servers = servers_with(all, section);
    if servers.is_empty() {
        println!("{}: no {section} rows, skipped", file_name(path));
        return Ok(false);
    }
    let methods = methods(all, &[section]);
    let mut configs = Vec::new();
    for (_, rows) in all {
        for r in rows.iter().filter(|r| r.0 == section) {
            push_new(&mut configs, &r.2);
        }
    }
    configs.sort_by_key(|c| config_key(c));
    let colors: Vec<RGBColor> = (0..methods.len()).map(color).collect();
    let legend = keys(&methods);
    figure(path, title, &legend, servers.len(), 1, |i, area| {
        let mut values = Vec::new();
        for (gi, g) in configs.iter().enumerate() {
            for (mi, m) in methods.iter().enumerate() {
                if let Some(v) = value(all, &servers[i], section, m, g) {
                    values.push((gi, mi, v));
                }
            }
        }
        let bars = Bars {
            title: servers[i].clone(),
            groups: configs.clone(),
            bars: methods.len(),
            values,
            colors: &colors,
            y_desc,
            scale,
            refs: &[],
        };
        bar_panel(area, &bars)
    })?;
    Ok(true)
}

fn contention(all: &All, path: &Path) -> Res<bool> {
    method_bars(
        all,
        path,
        "sections",
        "Completed critical sections per second under contention, by waiting method",
        "critical sections/s (log)",
        Scale::Log,
    )
}

fn handoff_cpu(all: &All, path: &Path) -> Res<bool> {
    method_bars(
        all,
        path,
        "handoff-cpu",
        "Server CPU per lock hand-off, by waiting method",
        "server CPU µs per hand-off",
        Scale::Zero,
    )
}
