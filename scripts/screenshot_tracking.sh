#!/usr/bin/env bash
# docs/img/mlflow_sweep.png, the README's picture of MLflow's UI (section Tracking), made from scratch:
#   1. a real sweep, the default job at two learning rates with 3 seeds each, logged by logger=mlflow
#      into a new SQLite database in a scratch folder;
#   2. MLflow's own server on 127.0.0.1 (the full `mlflow` package: the project's mlflow-skinny has no UI);
#   3. Debian's Chromium, headless, driven by Playwright: the experiment's runs table with both grid
#      points expanded to their seeds and a few params/metrics as columns, saved as the PNG;
#   4. the server stopped (also on failure).
# mlflow (at the version of the project's mlflow-skinny, so that it reads the database the sweep
# wrote) and playwright go into build/screenshot-venv, not into .venv. Needs `make setup` and
# Chromium (Debian: apt-get install chromium); about 5 minutes on 2 cores. Not run by the tests.
#
#   bash scripts/screenshot_tracking.sh [OUTPUT.png]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/img/mlflow_sweep.png}
port=${PORT:-5077}
chromium=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$chromium" ]; then
  echo "screenshot_tracking: no Chromium found; install Debian's (apt-get install chromium) or set CHROMIUM=/path/to/it" >&2
  exit 2
fi

tools=build/screenshot-venv
version=$(.venv/bin/python -c "from importlib.metadata import version; print(version('mlflow-skinny'))")
if ! "$tools/bin/python" -c "import mlflow.server, playwright; from importlib.metadata import version; assert version('mlflow') == '$version'" 2>/dev/null; then
  python3 -m venv "$tools"
  if ! "$tools/bin/pip" install -q "mlflow==$version" playwright; then
    # An index without mlflow-tracing at this version (this project's machine had none): mlflow's server
    # needs only mlflow-skinny (which holds the tracing code too) and the server's own packages.
    "$tools/bin/pip" install -q "mlflow-skinny==$version" playwright "Flask<4" "Flask-CORS<7" "aiohttp<4" "alembic<2" \
      "cryptography>=43,<51" "graphene<4" "gunicorn<27" "huey>=2.5.4,<4" "sqlalchemy>=1.4,<3" "pandas<4" "numpy<3"
    "$tools/bin/pip" install -q --no-deps "mlflow==$version"
  fi
fi

work=$(mktemp -d)
server=""
cleanup() {
  if [ -n "$server" ]; then  # the server and the workers it started: its own process group
    kill -TERM -- "-$server" 2>/dev/null || true
    for _ in $(seq 20); do kill -0 -- "-$server" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$server" 2>/dev/null || true
  fi
  if [ "$1" = 0 ]; then rm -rf "$work"; else echo "screenshot_tracking: failed; the sweep, database and server log are in $work" >&2; fi
}
trap 'cleanup $?' EXIT

db="sqlite:///$work/mlruns.db"
.venv/bin/python -m cl_sweep --multirun optimizer.learning_rate=0.0001,0.0002 n_seeds=3 progress=false \
  logger=mlflow "logger.tracking_uri=$db" logger.experiment_name=split_mnist_lr "hydra.sweep.dir=$work/lr_sweep"

setsid "$tools/bin/mlflow" server --backend-store-uri "$db" --host 127.0.0.1 --port "$port" --workers 1 >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 180); do
  curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
  sleep 1
done
curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "screenshot_tracking: MLflow's server did not answer" >&2; exit 1; }

mkdir -p "$(dirname "$out")"
"$tools/bin/python" - "http://127.0.0.1:$port" split_mnist_lr "$out" "$chromium" <<'EOF'
"""Opens the experiment's runs table, shows the grid points' seeds and a few columns, saves the PNG."""
import json
import re
import sys
import urllib.parse
import urllib.request

from playwright.sync_api import sync_playwright

url, experiment, out, chromium = sys.argv[1:]
query = urllib.parse.urlencode({"experiment_name": experiment})
with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/get-by-name?{query}") as r:
    experiment_id = json.load(r)["experiment"]["experiment_id"]

with sync_playwright() as p:
    browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
    page = browser.new_page(viewport={"width": 1400, "height": 600})
    page.goto(f"{url}/#/experiments/{experiment_id}/runs")
    for job in (0, 1):  # the grid points' runs are loaded (the column list is made from them)
        page.wait_for_selector(f"text=lr_sweep/{job}", timeout=180_000)
    close_assistant = page.locator('button[data-component-id="mlflow.assistant.chat_panel.close"]')
    if close_assistant.count():
        close_assistant.click()
    page.click('button[aria-label="Toggle sidebar"]')
    page.get_by_role("button", name="Columns").click()
    search = page.get_by_placeholder("Search columns")
    for column in ("Dataset", "Source", "Models", "optimizer.learning_rate", "seed", "final/final_accuracy",
                   "final/final_accuracy_std", "final/forgetting"):
        search.fill(column)
        title = page.locator("span.du-bois-light-tree-title", has_text=re.compile(f"^{re.escape(column)}$"))
        page.locator("div.du-bois-light-tree-treenode", has=title).locator("span.du-bois-light-tree-checkbox").first.click()
    page.keyboard.press("Escape")
    for header in page.locator('div.ag-header-cell[col-id^="metrics."], div.ag-header-cell[col-id^="params."]').all():
        header.hover()
        header.locator("div.ag-header-cell-resize").dblclick()  # ag-grid: fit the column to its contents
    for expand in page.locator('button[data-component-id*="runnamecellrenderer"]').all():
        expand.click()
    page.wait_for_selector("text=0-seed0")
    page.mouse.click(5, 590)  # nothing focused or hovered
    page.wait_for_timeout(1000)
    page.screenshot(path=out)
    browser.close()
print(f"screenshot_tracking: wrote {out}")
EOF
