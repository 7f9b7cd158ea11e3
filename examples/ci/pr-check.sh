#!/usr/bin/env bash
# The pull-request check the GitHub Actions and GitLab CI examples run (and Tether's tests run
# on a repository they make): in a policy repository with device snapshots in devices/*.json
# (`tether agent snapshot` on each device kind):
#   1. check that every policy file is in `tether fmt`'s layout (a diff of what fmt would change);
#   2. validate every policy file (exit 1 with FILE:LINE:COLUMN problems);
#   3. plan against each snapshot, offline, as JSON and as SARIF for code scanning;
#   4. merge the plans into one Markdown view for the pull request's comment.
# Writes into OUT (default tether-out): comment.md, plans/*.json, sarif/*.sarif.
# Exit 0 when every policy is valid and every plan was made; 1 otherwise.
set -euo pipefail
out=${1:-tether-out}
tether=${TETHER:-tether}
rm -rf "$out" && mkdir -p "$out/plans" "$out/sarif"

"$tether" fmt --check --diff policies
"$tether" validate --repo . --ref HEAD

shopt -s nullglob
snapshots=(devices/*.json)
[ ${#snapshots[@]} -gt 0 ] || { echo "pr-check: no device snapshots in devices/ (make them with \`tether agent snapshot > devices/NAME.json\`)" >&2; exit 1; }
for snapshot in "${snapshots[@]}"; do
  name=$(basename "$snapshot" .json)
  "$tether" plan --repo . --ref HEAD --against "$snapshot" --format json --out "$out/plans/$name.json"
  "$tether" plan --repo . --ref HEAD --against "$snapshot" --format sarif --out "$out/sarif/$name.sarif"
done
{
  echo "## Tether plan for ${#snapshots[@]} device kinds"
  echo
  "$tether" report merge "$out/plans" --format markdown
} > "$out/comment.md"
echo "pr-check: $out/comment.md, ${#snapshots[@]} plans in $out/plans, SARIF in $out/sarif"
