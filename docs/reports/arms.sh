# Sourced by the reports' run scripts (from the repository root): one training arm each, run once.
# distill_arm OUT ARM FLAGS...: `videocm distill FLAGS --out OUT/ARM`, unless OUT/ARM already holds a finished
# student (videocm.json); its output, start and end times go to OUT/ARM.log.
distill_arm() {
  local out=$1 arm=$2
  shift 2
  [ -f "$out/$arm/videocm.json" ] && return 0
  echo "$(date -u +%FT%TZ) $arm starts" >> "$out/$arm.log"
  .venv/bin/videocm distill "$@" --out "$out/$arm" >> "$out/$arm.log" 2>&1
  echo "$(date -u +%FT%TZ) $arm done" >> "$out/$arm.log"
}

# started DIR: true where DIR holds a run's config (an arm that resumes it), false otherwise
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }
