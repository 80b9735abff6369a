//! TaskService: operations that take time answer 202 with a task monitor the client polls.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::Context;
use super::errors::{ApiError, ApiResult, message};
use super::http::{now_unix, resource, rfc3339};
use super::models::{collection, odata_id, status_enabled};
use crate::machine::Machine;

/// Finished tasks kept for clients to read; older ones are forgotten.
const KEEP: usize = 64;
/// A power transition that has not settled by then is reported as failed.
const POWER_DEADLINE: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Completed,
    Exception,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub id: String,
    pub name: String,
    pub state: TaskState,
    pub started: u64,
    pub ended: Option<u64>,
    pub messages: Vec<Value>,
}

#[derive(Default)]
pub struct Tasks {
    inner: Mutex<(u64, VecDeque<Task>)>,
}

impl Tasks {
    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<Task>)> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn create(&self, name: &str) -> Task {
        let mut inner = self.lock();
        inner.0 += 1;
        let task = Task {
            id: inner.0.to_string(),
            name: name.to_owned(),
            state: TaskState::Running,
            started: now_unix(),
            ended: None,
            messages: vec![],
        };
        inner.1.push_back(task.clone());
        while inner.1.len() > KEEP {
            let Some(index) = inner.1.iter().position(|t| t.state != TaskState::Running) else {
                break;
            };
            inner.1.remove(index);
        }
        task
    }

    pub fn finish(&self, id: &str, state: TaskState, messages: Vec<Value>) {
        if let Some(task) = self.lock().1.iter_mut().find(|t| t.id == id) {
            task.state = state;
            task.ended = Some(now_unix());
            task.messages = messages;
        }
    }

    pub fn get(&self, id: &str) -> Option<Task> {
        self.lock().1.iter().find(|t| t.id == id).cloned()
    }

    pub fn ids(&self) -> Vec<String> {
        self.lock().1.iter().map(|t| t.id.clone()).collect()
    }
}

pub fn task_uri(id: &str) -> String {
    format!("/redfish/v1/TaskService/Tasks/{id}")
}

pub fn monitor_uri(id: &str) -> String {
    format!("/redfish/v1/TaskService/TaskMonitors/{id}")
}

pub fn task_json(task: &Task) -> Value {
    let (state, percent) = match task.state {
        TaskState::Running => ("Running", 50),
        TaskState::Completed => ("Completed", 100),
        TaskState::Exception => ("Exception", 100),
    };
    let mut value = json!({
        "@odata.type": "#Task.v1_5_1.Task",
        "@odata.id": task_uri(&task.id),
        "Id": task.id,
        "Name": task.name,
        "TaskState": state,
        "TaskStatus": if task.state == TaskState::Exception { "Critical" } else { "OK" },
        "PercentComplete": percent,
        "StartTime": rfc3339(task.started),
        "TaskMonitor": monitor_uri(&task.id),
        "Messages": task.messages,
    });
    if let Some(ended) = task.ended {
        value["EndTime"] = json!(rfc3339(ended));
    }
    value
}

/// 202 Accepted with the task and where to poll it.
pub fn accepted(task: &Task) -> Response {
    let mut response = (StatusCode::ACCEPTED, axum::Json(task_json(task))).into_response();
    if let Ok(location) = HeaderValue::from_str(&monitor_uri(&task.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(1));
    response
}

/// Completes `task` when the machine's power settles.
pub fn watch_power(tasks: Arc<Context>, machine: Arc<dyn Machine>, task: Task) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + POWER_DEADLINE;
        loop {
            match machine.power_state().await {
                Ok(state) if !state.is_transition() => {
                    let done = message("Success", &[]);
                    tasks
                        .tasks
                        .finish(&task.id, TaskState::Completed, vec![done]);
                    return;
                }
                Ok(_) if tokio::time::Instant::now() < deadline => {}
                Ok(_) => {
                    let text = "power did not settle in time";
                    let mut info = message("GeneralError", &[]);
                    info["Resolution"] = json!(text);
                    tasks
                        .tasks
                        .finish(&task.id, TaskState::Exception, vec![info]);
                    return;
                }
                Err(error) => {
                    let mut info = message("GeneralError", &[]);
                    info["Message"] = json!(error.to_string());
                    tasks
                        .tasks
                        .finish(&task.id, TaskState::Exception, vec![info]);
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}

pub async fn service() -> Response {
    resource(json!({
        "@odata.type": "#TaskService.v1_2_0.TaskService",
        "@odata.id": "/redfish/v1/TaskService",
        "Id": "TaskService",
        "Name": "Task Service",
        "ServiceEnabled": true,
        "CompletedTaskOverWritePolicy": "Oldest",
        "LifeCycleEventOnTaskStateChange": false,
        "DateTime": rfc3339(now_unix()),
        "Status": status_enabled(),
        "Tasks": odata_id("/redfish/v1/TaskService/Tasks"),
    }))
}

pub async fn list(State(context): State<Arc<Context>>) -> Response {
    let members: Vec<String> = context.tasks.ids().iter().map(|id| task_uri(id)).collect();
    resource(collection(
        "TaskCollection",
        "Tasks",
        "/redfish/v1/TaskService/Tasks",
        &members,
    ))
}

pub async fn get(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let task = context
        .tasks
        .get(&id)
        .ok_or_else(|| ApiError::not_found(&task_uri(&id)))?;
    Ok(resource(task_json(&task)))
}

/// Running: 202 with the task. Done: the operation's own answer (204), or its error.
pub async fn monitor(
    State(context): State<Arc<Context>>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let task = context
        .tasks
        .get(&id)
        .ok_or_else(|| ApiError::not_found(&monitor_uri(&id)))?;
    match task.state {
        TaskState::Running => Ok(accepted(&task)),
        TaskState::Completed => Ok(StatusCode::NO_CONTENT.into_response()),
        TaskState::Exception => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the operation failed",
            task.messages,
        )),
    }
}
