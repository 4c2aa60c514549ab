# Helpers both launch scripts source: errors, printing commands as a shell reads them, --dry-run,
# the command line. They read the caller's PROG (the script's name, for messages) and DRY_RUN
# (1: print, run nothing); parse_options calls the caller's usage and set_option.
# shellcheck shell=bash

die() {
  echo "$PROG: error: $*" >&2
  exit 2
}

# One argument as shell text: bare when safe, else single-quoted ('--flag=' stays outside).
quote_arg() {
  local arg=$1 prefix=''
  if [[ $arg =~ ^[A-Za-z0-9_@%+=:,./-]*$ && -n $arg ]]; then
    printf '%s' "$arg"
    return
  fi
  if [[ $arg =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    prefix=${BASH_REMATCH[1]}
    arg=${BASH_REMATCH[2]}
  fi
  printf "%s'%s'" "$prefix" "${arg//\'/\'\\\'\'}"
}

# Prints a command the way a shell would read it back: to stdout under --dry-run, to stderr as a
# trace otherwise.
show_cmd() {
  local line='+' arg
  for arg in "$@"; do
    line+=" $(quote_arg "$arg")"
  done
  if [[ $DRY_RUN == 1 ]]; then
    echo "$line"
  else
    echo "$line" >&2
  fi
}

run_cmd() {
  show_cmd "$@"
  [[ $DRY_RUN == 1 ]] || "$@"
}

is_true() {
  [[ ${1,,} =~ ^(1|true|yes|on)$ ]]
}

# A switch (an option without a value) of the caller: it sets it and returns 0. None by default.
set_switch() {
  return 1
}

# A bare word on the command line (a command, where the caller takes one). None by default.
set_word() {
  die "unexpected argument '$1' (see --help)"
}

# Reads the command line: -h/--help prints usage; --dry-run (or a true DRY_RUN in the environment)
# sets DRY_RUN=1; --config.* and everything after `--` go to PASSTHROUGH (the run's own flags);
# every --opt=value or --opt value goes to set_option, a switch to set_switch, a bare word to
# set_word.
parse_options() {
  local dry_run_env=${DRY_RUN:-0} opt value
  DRY_RUN=0
  ! is_true "$dry_run_env" || DRY_RUN=1
  PASSTHROUGH=()
  while (($#)); do
    opt=$1
    shift
    case $opt in
      -h | --help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1; continue ;;
      --) PASSTHROUGH+=("$@"); break ;;
      --config.*) PASSTHROUGH+=("$opt"); continue ;;
      --*=*) value=${opt#*=}; opt=${opt%%=*} ;;
      --*)
        ! set_switch "$opt" || continue
        (($#)) || die "$opt needs a value"
        value=$1
        shift
        ;;
      *) set_word "$opt"; continue ;;
    esac
    set_option "$opt" "$value"
  done
}
