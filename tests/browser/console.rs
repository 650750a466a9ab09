//! The console's pages as a person uses them, in headless Chromium.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    let Some(tools) = Tools::find() else {
        return;
    };
    let env = Env::seeded(5).await;
    let service = serve(&env).await;
    let api = Api::new(&service);
    let _waiting = make_runs(&api).await;
    let base = format!("http://{}", service.addr());

    let driver = Chromedriver::start(&tools);
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(&tools, profile.path()).await;
    let screens = Screens::new();

    // The viewer signs in through the form and sees who they are, then signs out.
    login(&browser, &base, VIEWER).await;
    browser.goto(&format!("{base}/people")).await.unwrap();
    assert_eq!(text(&browser, "#who .actor").await, "vera");
    assert_eq!(text(&browser, "#who .role").await, "viewer");
    logout(&browser).await;

    // The admin signs in and lands on the runs page.
    login(&browser, &base, API_TOKEN).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/runs");
    screens.save(&browser, "runs").await;

    // People: the list view, then a search for the mistyped address.
    browser.goto(&format!("{base}/people")).await.unwrap();
    assert_eq!(text(&browser, "#who .actor").await, "adam");
    find(
        &browser,
        "#people-table tr.record[data-key='new.hire@example.com']",
    )
    .await;
    let search = find(&browser, "#people-search input[name=q]").await;
    search.send_keys("mistyped").await.unwrap();
    find(&browser, "#people-search button[type=submit]")
        .await
        .click()
        .await
        .unwrap();
    until(&browser, "the search's one row", false, || async {
        browser
            .find_all(Locator::Css("#people-table tr.record"))
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert!(
        exists(
            &browser,
            "#people-table tr.record[data-key='mistyped@example']"
        )
        .await
    );
    // The SaaS users tab, filled by the Calendly ingest.
    find(
        &browser,
        "#people-tabs a[href='/people?collection=saas_users']",
    )
    .await
    .click()
    .await
    .unwrap();
    find(&browser, "#saas-users-table tr.record").await;
    browser.goto(&format!("{base}/people")).await.unwrap();
    find(&browser, "#people-table tr.record").await;
    screens.save(&browser, "people").await;

    // Workflows: every shipped workflow, and scim-provision's graph with its approval gate.
    find(&browser, "#nav a[href='/workflows']")
        .await
        .click()
        .await
        .unwrap();
    find(&browser, "#workflows-table").await;
    let shipped = std::fs::read_dir(support::root().join("workflows"))
        .unwrap()
        .count();
    assert_eq!(
        browser
            .find_all(Locator::Css("#workflows-table tr.workflow"))
            .await
            .unwrap()
            .len(),
        shipped
    );
    screens.save(&browser, "workflows").await;
    find(
        &browser,
        "#workflows-table tr.workflow[data-workflow='scim-provision'] a",
    )
    .await
    .click()
    .await
    .unwrap();
    find(
        &browser,
        "#workflow-graph svg.workflow-graph g.block.gate[data-block='delete']",
    )
    .await;
    screens.save(&browser, "workflow").await;

    // Licenses: Calendly's users by status and role.
    find(&browser, "#nav a[href='/licenses']")
        .await
        .click()
        .await
        .unwrap();
    find(
        &browser,
        "#license-vendors section.vendor[data-app='calendly']",
    )
    .await;
    screens.save(&browser, "licenses").await;

    browser.close().await.unwrap();
}
