//! A task's workflow, from its row's links: the tasks sharing its root
//! (a chain's steps, a chord's header and callback, children sent by a
//! task), its own children, its group's members, and the chord waiting on
//! that group. Each is an indexed lookup (`root_id`, `parent_id`,
//! `group_id`, the chord's key), capped.

use crate::error::ApiError;
use crate::state::AppState;
use celeriac_common::backend::chord::chord_entity;
use celeriac_common::backend::entity::{Column, Entity, Model};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use serde_json::{Value, json};

/// Tasks listed per relation at most.
const NODES_MAX: u64 = 300;

type Node = (
    String,
    Option<String>,
    String,
    Option<String>,
    Option<String>,
);

async fn nodes(state: &AppState, column: Column, value: &str) -> Result<Vec<Value>, ApiError> {
    let rows: Vec<Node> = Entity::find()
        .select_only()
        .columns([
            Column::TaskId,
            Column::TaskName,
            Column::State,
            Column::ParentId,
            Column::GroupId,
        ])
        .filter(column.eq(value))
        .order_by_asc(Column::CreatedAt)
        .limit(NODES_MAX)
        .into_tuple()
        .all(state.backend.connection())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, state, parent_id, group_id)| {
            json!({"id": id, "name": name, "state": state,
                   "parent_id": parent_id, "group_id": group_id})
        })
        .collect())
}

/// `{root_id, tree, children, group}` for the task page.
pub(crate) async fn workflow(state: &AppState, row: &Model) -> Result<Value, ApiError> {
    let root = row.root_id.clone().unwrap_or_else(|| row.task_id.clone());
    let mut tree = nodes(state, Column::RootId, &root).await?;
    if root != row.task_id
        && !tree.iter().any(|n| n["id"] == root.as_str())
        && let Some(r) = Entity::find_by_id(root.clone())
            .one(state.backend.connection())
            .await?
    {
        tree.insert(
            0,
            json!({"id": r.task_id, "name": r.task_name, "state": r.state,
                   "parent_id": r.parent_id, "group_id": r.group_id}),
        );
    }
    let children = nodes(state, Column::ParentId, &row.task_id).await?;
    let group = match &row.group_id {
        None => Value::Null,
        Some(g) => {
            let members = nodes(state, Column::GroupId, g).await?;
            let chord = chord_entity::Entity::find_by_id(g.clone())
                .one(state.backend.connection())
                .await?
                .map(|c| {
                    json!({"size": c.size, "done": c.done, "state": c.state,
                           "callback_id": c.callback_id})
                });
            json!({"id": g, "members": members, "chord": chord})
        }
    };
    // A lone task has no workflow to draw.
    let lone = tree.len() <= 1 && children.is_empty() && group.is_null();
    Ok(if lone {
        Value::Null
    } else {
        json!({"root_id": root, "tree": tree, "children": children, "group": group})
    })
}
