"""The launch scripts, run against stand-ins for gcloud, sbatch and srun.

The stand-ins record each call (one JSON line: program and argv) and succeed, or fail with a
capacity error a chosen number of times, so the tests check the exact commands a user's cloud or
cluster would receive, without one.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
TPU_VM = ROOT / 'launch' / 'tpu_vm.sh'
SLURM = ROOT / 'launch' / 'slurm_multi_gpu.sh'
CAPACITY_ERROR = (
    'ERROR: (gcloud.compute.tpus.tpu-vm.create) {"code": 8, "message": "There is no more '
    'capacity in the zone \\"us-central2-b\\"; you can try in another zone where Cloud TPU '
    'Nodes are offered (see https://cloud.google.com/tpu/docs/regions) [EID: 0x1]"}')

STANDIN = textwrap.dedent('''\
  #!{python}
  """Records its argv; fails the first STANDIN_FAILURES calls of its kind with STANDIN_ERROR."""
  import json, os, pathlib, subprocess, sys
  prog = pathlib.Path(sys.argv[0]).name
  log = pathlib.Path(os.environ['STANDIN_LOG'])
  calls = [json.loads(l) for l in log.read_text().splitlines()] if log.exists() else []
  with log.open('a') as f:
    f.write(json.dumps({{'prog': prog, 'argv': sys.argv[1:]}}) + '\\n')
  if sum(c['prog'] == prog for c in calls) < int(os.environ.get('STANDIN_FAILURES', '0')):
    sys.stderr.write(os.environ['STANDIN_ERROR'] + '\\n')
    sys.exit(1)
  if prog == 'sbatch' and os.environ.get('STANDIN_SBATCH_RUNS'):
    # Like slurmctld: run a spooled copy of the batch script with its arguments, in --chdir,
    # inside a "job".
    import shutil, tempfile
    args = sys.argv[1:]
    i = next(i for i, a in enumerate(args) if not a.startswith('--'))
    cwd = next(a.split('=', 1)[1] for a in args[:i] if a.startswith('--chdir='))
    spooled = pathlib.Path(tempfile.mkdtemp()) / 'slurm_script'
    shutil.copy(args[i], spooled)
    env = dict(os.environ, SLURM_JOB_ID='42', SLURM_CPUS_PER_TASK='8')
    sys.exit(subprocess.run(['bash', str(spooled), *args[i + 1:]], cwd=cwd, env=env).returncode)
  ''')


@pytest.fixture
def standins(tmp_path):
  """A bin folder with recording gcloud/sbatch/srun, and a reader of what they recorded."""
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  for prog in ('gcloud', 'sbatch', 'srun'):
    path = bin_dir / prog
    path.write_text(STANDIN.format(python=sys.executable))
    path.chmod(0o755)
  log = tmp_path / 'calls.jsonl'

  def calls(prog=None):
    if not log.exists():
      return []
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    return [r['argv'] for r in rows if prog is None or r['prog'] == prog]

  env = {k: v for k, v in os.environ.items()
         if not k.startswith(('SLURM_', 'TPU_', 'BACKTAL_', 'STANDIN_', 'DRY_RUN'))}
  env.update(PATH=f'{bin_dir}{os.pathsep}{env["PATH"]}', STANDIN_LOG=str(log),
             STANDIN_ERROR=CAPACITY_ERROR, TPU_RETRY_SLEEP='0')
  return env, calls


def run(script, *args, env, extra_env=None):
  return subprocess.run(['bash', str(script), *args], env={**env, **(extra_env or {})},
                        capture_output=True, text=True, timeout=60)


TPU = ('--name=tal', '--zone=us-central2-b')


def flag(argv, name):
  """The value of --name=value in argv (None when absent)."""
  values = [a.split('=', 1)[1] for a in argv if a.startswith(f'--{name}=')]
  assert len(values) <= 1, argv
  return values[0] if values else None


def test_create_sends_the_settings(standins):
  """Zone, accelerator type, runtime version, project and spot reach gcloud as the user set them."""
  env, calls = standins
  r = run(TPU_VM, 'create', *TPU, '--accelerator-type=v4-32', '--spot', env=env,
          extra_env={'TPU_PROJECT': 'my-proj', 'TPU_VERSION': 'tpu-ubuntu2204-base'})
  assert r.returncode == 0, r.stderr
  (argv,) = calls('gcloud')
  assert argv[:5] == ['compute', 'tpus', 'tpu-vm', 'create', 'tal']
  assert flag(argv, 'zone') == 'us-central2-b'
  assert flag(argv, 'accelerator-type') == 'v4-32'
  assert flag(argv, 'version') == 'tpu-ubuntu2204-base'
  assert flag(argv, 'project') == 'my-proj'
  assert '--spot' in argv and '--preemptible' not in argv


def test_create_retries_while_capacity_is_short(standins):
  """Two capacity failures then success: three create calls and a zero exit."""
  env, calls = standins
  r = run(TPU_VM, 'create', *TPU, '--attempts=5', env=env, extra_env={'STANDIN_FAILURES': '2'})
  assert r.returncode == 0, r.stderr
  assert len(calls('gcloud')) == 3
  assert 'no capacity (attempt 2 of 5)' in r.stderr


def test_create_gives_up_after_the_attempts(standins):
  """Retries are bounded: a zone that stays full ends in a non-zero exit after --attempts calls."""
  env, calls = standins
  r = run(TPU_VM, 'create', *TPU, env=env,
          extra_env={'STANDIN_FAILURES': '100', 'TPU_CREATE_ATTEMPTS': '3'})
  assert r.returncode != 0
  assert len(calls('gcloud')) == 3
  assert 'gave up after 3 attempts' in r.stderr


def test_create_does_not_retry_other_errors(standins):
  """A permission or quota-free error will not go away by waiting: one call, then fail."""
  env, calls = standins
  r = run(TPU_VM, 'create', *TPU, env=env,
          extra_env={'STANDIN_FAILURES': '100', 'STANDIN_ERROR': 'ERROR: PERMISSION_DENIED'})
  assert r.returncode != 0
  assert len(calls('gcloud')) == 1
  assert 'not retrying' in r.stderr


def test_setup_installs_on_every_worker(standins):
  """The checkout goes to all workers, then each installs the package and the TPU build of JAX."""
  env, calls = standins
  r = run(TPU_VM, 'setup', *TPU, env=env)
  assert r.returncode == 0, r.stderr
  scp, ssh = calls('gcloud')
  assert scp[:4] == ['compute', 'tpus', 'tpu-vm', 'scp'] and '--worker=all' in scp
  assert 'tal:backtal_jax-src.tar.gz' in scp and flag(scp, 'zone') == 'us-central2-b'
  assert ssh[:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'tal'] and '--worker=all' in ssh
  remote = flag(ssh, 'command')
  assert 'tar -xzf' in remote
  package = '"$HOME"/backtal_jax\'[gcs]\''
  assert f"-e {package} jax\\[tpu\\]" in remote
  expanded = subprocess.run(['bash', '-c', f'printf %s {package}'], env={'HOME': '/home/me'},
                            capture_output=True, text=True, check=True).stdout
  assert expanded == '/home/me/backtal_jax[gcs]'  # the gcs extra (gcsfs), for gs:// workdirs


def test_setup_can_clone_instead(standins):
  """With --repo the workers clone it (and check out --ref); nothing is copied."""
  env, calls = standins
  r = run(TPU_VM, 'setup', *TPU, '--repo=https://example.com/me/backtal_jax.git', '--ref=v0.1',
          env=env)
  assert r.returncode == 0, r.stderr
  (ssh,) = calls('gcloud')
  remote = flag(ssh, 'command')
  assert '--worker=all' in ssh
  assert 'git clone --quiet https://example.com/me/backtal_jax.git' in remote
  assert 'checkout --quiet v0.1' in remote


RUN_ARGS = ('--config=configs/thumos.py:synthetic', "--workdir=/tmp/it's my run",
            '--config.train.batch_size=64', '--', '--config.model.affinity=paper')
EXPECTED_MAIN = ['-m', 'backtal_jax.main', '--config=configs/thumos.py:synthetic',
                 "--workdir=/tmp/it's my run", '--distributed', '--config.train.batch_size=64',
                 '--config.model.affinity=paper']


def test_run_starts_main_on_every_worker(standins):
  """All workers start the trainer with its flags and overrides; then worker 0's log is followed."""
  env, calls = standins
  r = run(TPU_VM, 'run', *TPU, '--run-id=r1', *RUN_ARGS, env=env)
  assert r.returncode == 0, r.stderr
  start, follow = calls('gcloud')
  assert '--worker=all' in start and flag(start, 'zone') == 'us-central2-b'
  assert '--worker=0' in follow
  remote = flag(start, 'command')
  assert 'backtal_jax.main --config=configs/thumos.py:synthetic' in remote
  assert '--distributed --config.train.batch_size=64 --config.model.affinity=paper' in remote
  assert 'backtal_logs/r1/main.log' in remote
  assert 'tail' in flag(follow, 'command')


def test_run_commands_work_on_a_worker(standins, tmp_path):
  """The remote command lines, run by bash in a fake worker home, give main the exact argv.

  This is the quoting check: a workdir with a space and a quote must arrive as one argument, the
  log must hold main's output, and following the log must end with main's exit status.
  """
  env, calls = standins
  r = run(TPU_VM, 'run', *TPU, '--run-id=r1', *RUN_ARGS, env=env)
  assert r.returncode == 0, r.stderr
  start, follow = calls('gcloud')
  home = tmp_path / 'home'
  (home / 'backtal_jax').mkdir(parents=True)
  python = home / 'backtal_venv' / 'bin' / 'python'
  python.parent.mkdir(parents=True)
  argv_file = home / 'argv.json'
  python.write_text(f'#!{sys.executable}\nimport json, sys\n'
                    f'json.dump(sys.argv[1:], open({str(argv_file)!r}, "w"))\n'
                    'print("step 1 loss 0.5"); sys.exit(3)\n')
  python.chmod(0o755)
  worker_env = {'HOME': str(home), 'PATH': env['PATH']}
  subprocess.run(['bash', '-c', flag(start, 'command')], env=worker_env, check=True, timeout=30)
  followed = subprocess.run(['bash', '-c', flag(follow, 'command')], env=worker_env,
                            capture_output=True, text=True, timeout=60)
  assert json.loads(argv_file.read_text()) == EXPECTED_MAIN
  assert 'step 1 loss 0.5' in followed.stdout
  assert followed.returncode == 3
  assert (home / 'backtal_logs' / 'latest' / 'rc').read_text().strip() == '3'


def test_delete_is_quiet(standins):
  """Delete names the VM and zone and does not prompt."""
  env, calls = standins
  r = run(TPU_VM, 'delete', *TPU, env=env)
  assert r.returncode == 0, r.stderr
  (argv,) = calls('gcloud')
  assert argv[:5] == ['compute', 'tpus', 'tpu-vm', 'delete', 'tal']
  assert '--quiet' in argv and flag(argv, 'zone') == 'us-central2-b'


@pytest.mark.parametrize('command, expected', [
    (('create', '--accelerator-type=v4-16'), 'gcloud compute tpus tpu-vm create tal'),
    (('setup',), 'gcloud compute tpus tpu-vm scp'),
    (('run', *RUN_ARGS), 'backtal_jax.main --config=configs/thumos.py:synthetic'),
    (('stop',), 'gcloud compute tpus tpu-vm ssh tal --worker=all'),
    (('delete',), 'gcloud compute tpus tpu-vm delete tal --quiet'),
    (('bench',), 'gcloud compute tpus tpu-vm scp tal:backtal_bench/affinity_tpu.json'),
])
def test_tpu_dry_run_runs_nothing(standins, command, expected):
  """--dry-run prints the commands (as a shell would read them) and never calls gcloud."""
  env, calls = standins
  r = run(TPU_VM, command[0], *TPU, '--dry-run', *command[1:], env=env)
  assert r.returncode == 0, r.stderr
  assert calls() == []
  assert expected in r.stdout
  for line in r.stdout.splitlines():
    if line.startswith('+ gcloud'):
      argv = shlex.split(line[2:])
      assert flag(argv, 'zone') == 'us-central2-b'


def test_bench_runs_both_benchmarks_on_worker_0_and_copies_their_json_back(standins, tmp_path):
  env, calls = standins
  out = tmp_path / 'results'
  r = run(TPU_VM, 'bench', *TPU, f'--bench-out={out}', env=env)
  assert r.returncode == 0, r.stderr
  ssh, scp = calls('gcloud')
  assert ssh[:5] == ['compute', 'tpus', 'tpu-vm', 'ssh', 'tal'] and flag(ssh, 'worker') == '0'
  remote = flag(ssh, 'command')
  assert ('-m benchmarks.affinity_kernel --json_out="$HOME"/backtal_bench/affinity_tpu.json'
          in remote)
  assert '-m benchmarks.train_step --json_out="$HOME"/backtal_bench/train_step_tpu.json' in remote
  assert scp[:4] == ['compute', 'tpus', 'tpu-vm', 'scp'] and flag(scp, 'worker') == '0'
  assert scp[4:7] == ['tal:backtal_bench/affinity_tpu.json',
                      'tal:backtal_bench/train_step_tpu.json', f'{out}/']
  assert out.is_dir()


def test_tpu_dry_run_from_the_environment(standins):
  """DRY_RUN=1 is the same as --dry-run."""
  env, calls = standins
  r = run(TPU_VM, 'delete', *TPU, env=env, extra_env={'DRY_RUN': '1'})
  assert r.returncode == 0 and calls() == []
  assert 'tpu-vm delete tal' in r.stdout


@pytest.mark.parametrize('args, missing', [
    (('create', '--name=tal'), '--zone'),
    (('create', '--zone=us-central2-b'), '--name'),
    (('run', *TPU, '--workdir=gs://b/r'), '--config'),
    (('run', *TPU, '--config=configs/thumos.py'), '--workdir'),
])
def test_tpu_missing_setting_is_a_clear_error(standins, args, missing):
  """A missing required setting names its flag and variable, exits non-zero and calls nothing."""
  env, calls = standins
  r = run(TPU_VM, *args, env=env)
  assert r.returncode != 0
  assert f'missing {missing}' in r.stderr and 'environment variable' in r.stderr
  assert calls() == []


def test_tpu_settings_from_the_environment(standins):
  """Name and zone can come from TPU_NAME and TPU_ZONE instead of flags."""
  env, calls = standins
  r = run(TPU_VM, 'delete', env=env,
          extra_env={'TPU_NAME': 'env-tpu', 'TPU_ZONE': 'europe-west4-a'})
  assert r.returncode == 0, r.stderr
  (argv,) = calls('gcloud')
  assert 'env-tpu' in argv and flag(argv, 'zone') == 'europe-west4-a'


def test_tpu_unknown_option_and_help(standins):
  """A typo is an error, not silently ignored; --help works without any setting."""
  env, calls = standins
  r = run(TPU_VM, 'create', *TPU, '--acelerator-type=v4-8', env=env)
  assert r.returncode != 0 and 'unknown option --acelerator-type' in r.stderr
  r = run(TPU_VM, '--help', env=env)
  assert r.returncode == 0 and 'create' in r.stdout and 'TPU_ZONE' in r.stdout
  assert calls() == []


SLURM_ARGS = ('--config=configs/thumos.py', '--workdir=/shared/my runs/t1',
              '--config.train.batch_size=64')


def test_slurm_submits_one_task_per_gpu(standins):
  """sbatch gets nodes, one task per GPU, GPUs per node, and the trainer's settings."""
  env, calls = standins
  r = run(SLURM, '--nodes=3', '--gpus-per-node=4', '--partition=gpu', *SLURM_ARGS, env=env,
          extra_env={'BACKTAL_LOG_DIR': str(pathlib.Path(env['STANDIN_LOG']).parent / 'logs')})
  assert r.returncode == 0, r.stderr
  (argv,) = calls('sbatch')
  assert flag(argv, 'nodes') == '3'
  assert flag(argv, 'ntasks-per-node') == '4' and flag(argv, 'gpus-per-node') == '4'
  assert flag(argv, 'partition') == 'gpu' and flag(argv, 'chdir') == str(ROOT)
  script = argv.index(str(SLURM))
  assert argv[script + 1:] == ['--config=configs/thumos.py', '--workdir=/shared/my runs/t1',
                               '--python=python', '--', '--config.train.batch_size=64']
  assert 'divisible by 12' in r.stderr
  assert calls('srun') == []


def test_slurm_job_runs_srun_with_main(standins):
  """Inside a job, srun starts main on every task with --distributed and the overrides intact."""
  env, calls = standins
  r = run(SLURM, *SLURM_ARGS, env=env, extra_env={'SLURM_JOB_ID': '7'})
  assert r.returncode == 0, r.stderr
  (argv,) = calls('srun')
  main = argv.index('python')
  assert '--kill-on-bad-exit=1' in argv[:main] and '--gpu-bind=none' in argv[:main]
  assert argv[main:] == ['python', '-m', 'backtal_jax.main', '--config=configs/thumos.py',
                         '--workdir=/shared/my runs/t1', '--distributed',
                         '--config.train.batch_size=64']


def test_slurm_submission_reaches_srun(standins, tmp_path):
  """Submit, let the stand-in sbatch run the job script: srun gets what the user typed."""
  env, calls = standins
  r = run(SLURM, '--python=/opt/venv/bin/python', *SLURM_ARGS, env=env,
          extra_env={'STANDIN_SBATCH_RUNS': '1', 'BACKTAL_LOG_DIR': str(tmp_path / 'logs')})
  assert r.returncode == 0, r.stderr
  (argv,) = calls('srun')
  assert '--cpus-per-task=8' in argv
  main = argv.index('/opt/venv/bin/python')
  assert argv[main + 1:] == ['-m', 'backtal_jax.main', '--config=configs/thumos.py',
                             '--workdir=/shared/my runs/t1', '--distributed',
                             '--config.train.batch_size=64']


@pytest.mark.parametrize('extra_env', [{}, {'SLURM_JOB_ID': '7'}])
def test_slurm_dry_run_runs_nothing(standins, extra_env):
  """--dry-run prints the sbatch/srun commands and calls neither."""
  env, calls = standins
  r = run(SLURM, '--dry-run', *SLURM_ARGS, env=env, extra_env=extra_env)
  assert r.returncode == 0, r.stderr
  assert calls() == []
  assert 'srun --kill-on-bad-exit=1' in r.stdout
  assert "--workdir='/shared/my runs/t1' --distributed" in r.stdout
  if not extra_env:
    assert '+ sbatch --job-name=backtal --nodes=2 --ntasks-per-node=8' in r.stdout


@pytest.mark.parametrize('args, missing', [
    (('--workdir=/w',), '--config'),
    (('--config=configs/thumos.py',), '--workdir'),
])
def test_slurm_missing_setting_is_a_clear_error(standins, args, missing):
  """No config or workdir: a message naming the flag, a non-zero exit, no submission."""
  env, calls = standins
  r = run(SLURM, *args, env=env)
  assert r.returncode != 0 and f'missing {missing}' in r.stderr
  assert calls() == []


@pytest.mark.parametrize('script', [TPU_VM, SLURM])
def test_scripts_are_strict_bash(script):
  """Line 1 is the shebang and errors stop the script; shellcheck-clean where shellcheck exists."""
  lines = script.read_text().splitlines()
  assert lines[0] == '#!/usr/bin/env bash'
  assert 'set -euo pipefail' in lines
  assert os.access(script, os.X_OK)
  if shutil.which('shellcheck'):
    r = subprocess.run(['shellcheck', str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_tpu_preflight_compiles_locally_for_the_accelerator_type(standins):
  env, calls = standins
  r = run(TPU_VM, 'preflight', '--accelerator-type=v5litepod-8', '--dry-run',
          '--config.model.dtype=bfloat16', env=env)
  assert r.returncode == 0, r.stderr
  assert calls() == []  # no gcloud: it all happens on this machine
  argv = shlex.split(r.stdout.strip()[2:])
  assert argv[:3] == ['python', '-m', 'benchmarks.tpu_compile']
  assert flag(argv, 'accelerator_type') == 'v5litepod-8'
  assert flag(argv, 'datasets') == 'thumos14' and flag(argv, 'set') == 'model.dtype=bfloat16'
