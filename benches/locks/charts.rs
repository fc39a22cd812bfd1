//! SVG charts from the results every server's run left in `report::out_dir()`.

use crate::report;

pub fn draw() {
    let all = report::load_all();
    println!("{} results files", all.len());
}
