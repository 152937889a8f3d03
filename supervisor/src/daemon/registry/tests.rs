//! The registry alone: entries with no process behind them, time and
//! waiters observed directly.

use std::sync::Arc;

use arbor_protocol::control::{Event, EventKind, WorkerState};

use super::{Registry, KEEP_EXITED};
use crate::config::Config;
use crate::daemon::error::ControlError;
use crate::daemon::pools::{Pool, PoolRuntime};
use crate::daemon::recipe::Recipe;

fn registry() -> Registry {
    Registry::new([])
}

fn parse(text: &str) -> Config {
    Config::parse(text, std::path::Path::new("arbord.toml")).unwrap()
}

fn recipe(name: &str) -> Recipe {
    Recipe::for_sub_worker(name)
}

fn insert(registry: &Registry, name: &str) -> u64 {
    registry.insert(recipe(name), None, false, None).unwrap()
}

fn output(id: u64, line: String) -> Event {
    Event {
        worker: id,
        name: "w".into(),
        parent: None,
        kind: EventKind::Output(line),
    }
}

#[test]
fn a_stopped_config_worker_outlives_any_number_of_other_exits() {
    let registry = registry();
    let boot = registry.insert(recipe("boot"), None, true, None).unwrap();
    registry.request_stop(boot).unwrap();
    registry.set_state(boot, WorkerState::Exited);
    // Spawned workers and a pool's replicas (declared too, but coming and
    // going) churn past the bound.
    let pool = parse("[[pool]]\nname = \"web\"\nprogram = \"/bin/true\"").pools[0].clone();
    let runtime = Arc::new(PoolRuntime::default());
    for i in 0..2 * KEEP_EXITED {
        let id = match i % 2 {
            0 => insert(&registry, "churn"),
            _ => registry
                .insert(Recipe::for_pool(&pool, &runtime), None, true, None)
                .unwrap(),
        };
        registry.set_state(id, WorkerState::Exited);
    }
    registry.forget_old_exits();
    let kept = registry.config_workers();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(kept[0].0, boot);
    assert!(registry.stop_requested(boot));
    // The others are bounded as before.
    assert_eq!(registry.counts().0, KEEP_EXITED + 1);
}

#[test]
fn ids_are_handed_out_in_order_from_1() {
    let registry = registry();
    assert_eq!([insert(&registry, "a"), insert(&registry, "b")], [1, 2]);
}

#[test]
fn nothing_is_entered_once_shutdown_began() {
    let registry = registry();
    let mut stopping = registry.stopping();
    assert!(registry.begin_shutdown().is_empty());
    assert!(*stopping.borrow_and_update());
    assert!(matches!(
        registry.insert(recipe("late"), None, false, None),
        Err(ControlError::ShuttingDown)
    ));
    assert!(registry.is_stopping());
}

#[test]
fn a_stop_of_a_worker_between_runs_marks_it_and_tells_its_waiters() {
    let registry = registry();
    let id = insert(&registry, "w");
    let seen = registry.watch(id).unwrap();
    assert!(matches!(registry.request_stop(id), Ok(None)));
    assert!(registry.stop_requested(id));
    let now = *seen.borrow();
    assert!(now.stop_requested);
    // No handle: not closing, there is nothing to close.
    assert_eq!(now.state, WorkerState::Starting);
    assert!(matches!(
        registry.request_stop(99),
        Err(ControlError::NoSuchWorker(99))
    ));
}

#[test]
fn a_waiter_wakes_for_its_own_worker_only() {
    let registry = registry();
    let (mine, other) = (insert(&registry, "mine"), insert(&registry, "other"));
    let mut seen = registry.watch(mine).unwrap();
    seen.borrow_and_update();
    registry.set_state(other, WorkerState::Running);
    assert!(!seen.has_changed().unwrap());
    registry.set_state(mine, WorkerState::Running);
    assert!(seen.has_changed().unwrap());
    assert_eq!(seen.borrow_and_update().state, WorkerState::Running);
}

#[test]
fn a_forgotten_worker_ends_its_waiters_wait() {
    let registry = registry();
    let id = insert(&registry, "w");
    let seen = registry.watch(id).unwrap();
    registry.remove(id);
    assert!(
        seen.has_changed().is_err(),
        "the sender went with the entry"
    );
    assert!(registry.watch(id).is_none());
}

#[test]
fn only_the_oldest_exits_beyond_the_bound_are_forgotten() {
    let registry = registry();
    let live = insert(&registry, "live");
    let gone: Vec<u64> = (0..KEEP_EXITED + 10)
        .map(|_| {
            let id = insert(&registry, "brief");
            registry.set_state(id, WorkerState::Exited);
            id
        })
        .collect();
    registry.forget_old_exits();
    assert!(registry.watch(live).is_some(), "a live worker stays");
    assert!(gone[..10].iter().all(|id| registry.watch(*id).is_none()));
    assert!(gone[10..].iter().all(|id| registry.watch(*id).is_some()));
}

#[test]
fn a_worker_out_of_a_final_state_again_is_no_longer_counted_among_the_exits() {
    let registry = registry();
    let back = insert(&registry, "back");
    registry.set_state(back, WorkerState::Exited);
    // Started again (a restart's state) before the churn.
    registry.set_state(back, WorkerState::Starting);
    for _ in 0..KEEP_EXITED + 10 {
        let id = insert(&registry, "brief");
        registry.set_state(id, WorkerState::Exited);
    }
    registry.forget_old_exits();
    assert!(
        registry.watch(back).is_some(),
        "a worker started again stays"
    );
    assert_eq!(registry.counts(), (KEEP_EXITED + 1, 0));
}

#[tokio::test]
async fn a_follower_sees_every_line_once_the_snapshot_then_the_stream() {
    use crate::daemon::events::Next;
    let registry = registry();
    let id = insert(&registry, "w");
    registry.output(id, "one".into(), |l| output(id, l));
    let (snapshot, mut events) = registry.follow(id, 10).unwrap();
    registry.output(id, "two".into(), |l| output(id, l));
    assert_eq!(snapshot, ["one"]);
    // Closed: what the stream holds, then its end.
    registry.events().close();
    assert!(
        matches!(events.next().await, Next::Event(e) if e.kind == EventKind::Output("two".into()))
    );
    assert!(matches!(events.next().await, Next::End));
    assert_eq!(registry.tail(id, 1).unwrap(), ["two"]);
}

#[test]
fn a_shared_name_is_taken_once_and_freed_when_its_start_fails() {
    let registry = registry();
    let held = registry.reserve_shared(recipe("counter")).unwrap();
    assert!(matches!(
        registry.reserve_shared(recipe("counter")),
        Err(ControlError::SharedExists(_))
    ));
    // An attach waits on the gate while the first run starts.
    assert!(registry.shared_gate("counter").unwrap().try_lock().is_err());
    drop(held);
    registry.unreserve_shared("counter");
    assert!(matches!(
        registry.shared_gate("counter"),
        Err(ControlError::NoSuchShared(_))
    ));
    assert!(registry.reserve_shared(recipe("counter")).is_ok());
}

#[test]
fn a_shared_worker_declared_while_a_spawn_of_its_name_starts_survives_that_starts_failure() {
    let registry = registry();
    let held = registry.reserve_shared(recipe("counter")).unwrap();
    let declared = parse("[[shared]]\nname = \"counter\"\nprogram = \"/bin/true\"").shared;
    assert!(registry.reload_shared(&declared).is_empty());
    drop(held);
    registry.unreserve_shared("counter");
    let (recipe, current) = registry.shared_run("counter").unwrap();
    assert_eq!(recipe.name, "counter");
    assert_eq!(current, None);
}

#[test]
fn a_scale_forgets_replicas_that_are_gone_or_stopped() {
    let registry = registry();
    let config = parse("[[pool]]\nname = \"web\"\nprogram = \"/bin/true\"").pools[0].clone();
    let runtime = Arc::new(PoolRuntime::default());
    let replicas: Vec<u64> = (0..3).map(|_| insert(&registry, "web")).collect();
    registry.insert_pool(
        "web".into(),
        Pool {
            recipe: Recipe::for_pool(&config, &runtime),
            config,
            runtime,
            wanted: 3,
            replicas: replicas.clone(),
            turn: Arc::default(),
        },
    );
    registry.set_state(replicas[0], WorkerState::Failed);
    registry.request_stop(replicas[1]).unwrap();
    let (_, live) = registry.want_replicas("web", 2).unwrap();
    assert_eq!(live, [replicas[2]]);
    registry.add_replica("web", 9);
    registry.drop_replicas("web", &[replicas[2]]);
    let plan = registry.plan_replacement("web", None).unwrap();
    assert!(
        plan.old.is_empty(),
        "9 is not a known worker: {:?}",
        plan.old
    );
    assert!(matches!(
        registry.want_replicas("nope", 1),
        Err(ControlError::NoSuchPool(_))
    ));
}
