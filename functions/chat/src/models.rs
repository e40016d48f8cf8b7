//! `GET /models`: what the deployment offers, the default first.

use lambda_http::{
    http::{header::CACHE_CONTROL, HeaderValue, StatusCode},
    Response,
};
use serde::Serialize;
use shared::{
    http::{self, AnswerBody, ApiError},
    llm::Offer,
};

use crate::State;

#[derive(Serialize)]
struct Models<'a> {
    /// The provider and model a request that names none gets; `null` if none is offered.
    default: Option<ModelChoice<'a>>,
    providers: Vec<ProviderView<'a>>,
}

#[derive(Serialize)]
struct ModelChoice<'a> {
    provider: &'a str,
    model: &'a str,
}

#[derive(Serialize)]
struct ProviderView<'a> {
    name: &'a str,
    models: &'a [String],
}

pub(crate) async fn list(state: &State) -> Result<Response<AnswerBody>, ApiError> {
    let offers: Vec<Offer> = state.llm.offered().await?;
    let default = offers.first().and_then(|offer| {
        offer.models.first().map(|model| ModelChoice {
            provider: &offer.provider,
            model,
        })
    });
    let providers = offers
        .iter()
        .map(|offer| ProviderView {
            name: &offer.provider,
            models: &offer.models,
        })
        .collect();
    let mut response = http::json(StatusCode::OK, &Models { default, providers });
    // The same for every caller until the next deployment (or key change).
    response.headers_mut().insert(
        CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=300"),
    );
    Ok(response.map(AnswerBody::from))
}
