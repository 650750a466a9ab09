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
    let waiting = make_runs(&api).await;
    let base = format!("http://{}", service.addr());

    let driver = Chromedriver::start(&tools);
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.session(&tools, profile.path()).await;
    let screens = Screens::new();

    // The viewer signs in through the form: the Approvals page lists the waiting run without
    // the buttons a viewer may not use. Then signs out.
    login(&browser, &base, VIEWER).await;
    assert_eq!(text(&browser, "#who .actor").await, "vera");
    assert_eq!(text(&browser, "#who .role").await, "viewer");
    click(&browser, "#nav a[href='/approvals']").await;
    let waiting_row = format!("#approvals-table tr.approval[data-run='{waiting}']");
    find(&browser, &waiting_row).await;
    assert!(!exists(&browser, "#approvals-table form.approve").await);
    assert!(!exists(&browser, "#approvals-table form.reject").await);
    logout(&browser).await;

    // The admin signs in and lands on the runs page, newest first, outcomes coloured.
    login(&browser, &base, API_TOKEN).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/runs");
    assert_eq!(text(&browser, "#who .actor").await, "adam");
    find(&browser, "#runs-table tr.run[data-status='failed']").await;
    let badge = find(&browser, "#runs-table tr.run[data-status='failed'] .badge").await;
    assert_eq!(
        badge.attr("class").await.unwrap().unwrap(),
        "badge status-failed"
    );
    screens.save(&browser, "runs").await;

    // Filtered to webex-create: the new hire's run succeeded, the mistyped address's failed;
    // open the failed one.
    find(&browser, "#runs-filters select[name=workflow]")
        .await
        .select_by_value("webex-create")
        .await
        .unwrap();
    click(&browser, "#runs-filters button[type=submit]").await;
    until(&browser, "the runs of webex-create only", false, || async {
        let query = browser.current_url().await.unwrap();
        query.query() == Some("workflow=webex-create&status=&subject=&trigger=&since=")
    })
    .await;
    let mut outcomes = Vec::new();
    for row in browser
        .find_all(Locator::Css("#runs-table tr.run"))
        .await
        .unwrap()
    {
        outcomes.push(row.attr("data-status").await.unwrap().unwrap());
    }
    outcomes.sort();
    assert_eq!(outcomes, ["failed", "succeeded"]);
    click(
        &browser,
        "#runs-table tr.run[data-status='failed'] a[href^='/runs/']",
    )
    .await;

    // The run's page: the failed step in the timeline, and its block drawn as failed in the
    // graph (the class the stylesheet and tests read, and the fill the eye sees).
    assert_eq!(text(&browser, "#run-status .badge").await, "failed");
    let failed_step = find(&browser, "#run-timeline li.step[data-status='failed']").await;
    let failed_block = failed_step.attr("data-block").await.unwrap().unwrap();
    let block = find(
        &browser,
        &format!("#run-graph svg.workflow-graph g.block[data-block='{failed_block}']"),
    )
    .await;
    let class = block.attr("class").await.unwrap().unwrap();
    assert!(
        class.split(' ').any(|c| c == "status-failed"),
        "{failed_block}: {class}"
    );
    assert_eq!(
        block.attr("data-status").await.unwrap().as_deref(),
        Some("failed")
    );
    let shape = block.find(Locator::Css(".shape")).await.unwrap();
    assert_eq!(
        shape.attr("fill").await.unwrap().as_deref(),
        Some("#fde2e1")
    );
    assert_eq!(shape.css_value("fill").await.unwrap(), "rgb(253, 226, 225)");
    // The blocks before it succeeded; the edge into it was taken.
    let begin = find(&browser, "#run-graph g.block[data-block='begin']").await;
    assert!(begin
        .attr("class")
        .await
        .unwrap()
        .unwrap()
        .contains("status-succeeded"));
    find(
        &browser,
        &format!("#run-graph g.edge.taken[data-to='{failed_block}']"),
    )
    .await;
    screens.save(&browser, "run").await;
    // The README's picture: the top of the page (summary, graph, outcome, the timeline's start).
    let run_top = screens.save_view(&browser, "run-top", 1000).await;
    if let Ok(dir) = std::env::var("BLOCKYARD_SCREENSHOTS") {
        let to = support::root().join(dir).join("console-run.png");
        std::fs::copy(&run_top, &to).unwrap();
        eprintln!("browser test: the run page copied to {}", to.display());
    }

    // An offline replay of it: nothing sent, a verdict and a line per block.
    click(&browser, "#run-actions form.replay-offline button").await;
    assert_eq!(
        text(&browser, "#replay-verdict").await,
        "identical to the recording"
    );
    let compared = find(
        &browser,
        &format!("#replay-diff li.diff-block[data-block='{failed_block}']"),
    )
    .await;
    assert_eq!(
        compared.attr("class").await.unwrap().as_deref(),
        Some("diff-block identical")
    );
    screens.save(&browser, "replay").await;

    // Approvals: the waiting run with the request it will send; approve it with a comment.
    click(&browser, "#nav a[href='/approvals']").await;
    let row = find(&browser, &waiting_row).await;
    let pending = row
        .find(Locator::Css(".pending-line"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(pending.starts_with("DELETE http://127.0.0.1:"), "{pending}");
    screens.save(&browser, "approvals").await;
    row.find(Locator::Css("form.approve input[name=comment]"))
        .await
        .unwrap()
        .send_keys("checked in the browser")
        .await
        .unwrap();
    row.find(Locator::Css("form.approve button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // Decided: who and when, and no longer waiting.
    let decided = find(
        &browser,
        &format!("#decided-table tr.decided.approved[data-run='{waiting}']"),
    )
    .await;
    assert_eq!(
        decided
            .find(Locator::Css(".by"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "adam"
    );
    assert_eq!(
        decided
            .find(Locator::Css(".comment"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "checked in the browser"
    );
    assert!(!exists(&browser, &waiting_row).await);
    // The run finishes: its page's live part updates itself (no reload).
    browser
        .goto(&format!("{base}/runs/{waiting}"))
        .await
        .unwrap();
    until(&browser, "the approved run succeeded", false, || async {
        // The live part is replaced as it polls: an element found just before may be gone.
        let badge = browser.find(Locator::Css("#run-status .badge")).await;
        match badge {
            Ok(badge) => badge.text().await.is_ok_and(|t| t == "succeeded"),
            Err(_) => false,
        }
    })
    .await;
    // The graph is drawn with the page (it is not part of the live updates): reloaded, the
    // approval gate's block is drawn as succeeded.
    browser.refresh().await.unwrap();
    let delete = find(&browser, "#run-graph g.block[data-block='delete']").await;
    let class = delete.attr("class").await.unwrap().unwrap();
    assert_eq!(class, "block kind-api gate status-succeeded");
    screens.save(&browser, "run-approved").await;

    // People: the list view, then a search for the mistyped address.
    click(&browser, "#nav a[href='/people']").await;
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
    click(&browser, "#nav a[href='/workflows']").await;
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
    click(&browser, "#nav a[href='/licenses']").await;
    find(
        &browser,
        "#license-vendors section.vendor[data-app='calendly']",
    )
    .await;
    screens.save(&browser, "licenses").await;

    browser.close().await.unwrap();
}
