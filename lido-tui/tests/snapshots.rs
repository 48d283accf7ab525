//! The screens at fixed sizes (120x40 and 80x24), as `insta` snapshots of
//! the `TestBackend` text: main screen with rates, market view, picker,
//! spawn form and help.

mod common;

use common::*;
use crossterm::event::KeyCode;
use lido_tui::app::App;

fn snap(name: &str, app: &App) {
    for (w, h) in [(120, 40), (80, 24)] {
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), screen(&render(app, w, h)));
    }
}

#[test]
fn main_screen() {
    let mut app = app_with_rates();
    select_service(&mut app, "paper"); // with its sparklines
    snap("main", &app);
}

#[test]
fn main_screen_filtered() {
    let mut app = app_with_rates();
    app.update(key('/'));
    type_text(&mut app, "sim");
    snap("main_filtered", &app);
}

#[test]
fn command_line() {
    let mut app = app_with_rates();
    app.update(key(':'));
    type_text(&mut app, "drain n1");
    snap("command_line", &app);
}

#[test]
fn market_view() {
    snap("market", &app_on_market());
}

#[test]
fn market_picker() {
    let mut app = connected_app(false);
    app.update(key('m'));
    app.update(lido_tui::action::Action::Markets(Ok(markets())));
    app.update(key('j'));
    snap("market_picker", &app);
}

#[test]
fn spawn_form() {
    let mut app = connected_app(false);
    app.update(key('n'));
    app.update(code(KeyCode::Tab));
    app.update(code(KeyCode::Tab));
    type_text(&mut app, "p2");
    app.update(code(KeyCode::Tab));
    app.update(code(KeyCode::Tab));
    type_text(&mut app, "seed");
    app.update(code(KeyCode::Enter)); // refused: not k=v
    snap("spawn_form", &app);
}

#[test]
fn help() {
    let mut app = app_with_rates();
    app.update(key('?'));
    snap("help", &app);
}

#[test]
fn help_readonly() {
    let mut app = connected_app(true);
    app.update(key('?'));
    snap("help_readonly", &app);
}

#[test]
fn help_on_the_market_view() {
    let mut app = app_on_market();
    app.update(key('?'));
    snap("help_market", &app);
}
