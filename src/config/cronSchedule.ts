import cron, { type ScheduledTask, type TaskFn, type TaskOptions } from 'node-cron';

/**
 * The node-cron task of `schedule` read in `timezone`, created and not started. The cron role
 * starts it; the config check asks it for its first tick, which is what starting it computes
 * first. One constructor for both, so a schedule the config accepts is one the role can start.
 */
export function createCronTask(
  schedule: string,
  timezone: string,
  run: TaskFn,
  options: Omit<TaskOptions, 'timezone'> = {},
): ScheduledTask {
  return cron.createTask(schedule, run, { ...options, timezone });
}

/**
 * Why `schedule` is not a cron schedule node-cron can parse, or null. Syntax only: whether it
 * ever falls due depends on the time zone (cronScheduleNeverDue).
 */
export function cronScheduleSyntaxProblem(schedule: string): string | null {
  const checked = cron.validateDetailed(schedule);
  return checked.valid ? null : checked.errors.map((e) => e.message).join('; ');
}

/**
 * Why the cron role could not start `schedule` in `timezone`, or null: the task is created as
 * the role creates it and asked for its next tick, as starting it would (and is not started).
 * node-cron's own check passes expressions that never fall due, and starting those throws:
 * `0 0 31W 4 *` (April has no 31st), or `30 2 * 3 0#2` in America/New_York (2:30 on the
 * second Sunday of March is skipped by the change to summer time).
 */
export function cronScheduleNeverDue(schedule: string, timezone: string): string | null {
  let task: ScheduledTask | undefined;
  try {
    task = createCronTask(schedule, timezone, () => {});
    task.getNextRuns(1);
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  } finally {
    try {
      void task?.destroy();
    } catch {
      // Never started: nothing runs whatever destroy says.
    }
  }
}
