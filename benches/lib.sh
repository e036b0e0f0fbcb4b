# Sourced by the benchmark scripts (from the repository root): a scratch directory `work`,
# the background processes started for the run (`pids+=($!)`) and extra clean-up steps
# (`at_exit CMD…`), all undone on exit. KEEP=1 keeps the directory for a look afterwards.
work=$(mktemp -d)
pids=()
exit_steps=()
at_exit() { exit_steps+=("$*"); }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for step in "${exit_steps[@]}"; do eval "$step" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
