"""The simulator's knobs: one pydantic model, every default tied to its source.

Row ids in brackets ([6.2], [H6], ...) point at §6 of the research notes (research/analytics.md),
where each number is cited. "assumption" marks a knob no public source pins down (analytics.md
§6.2 says so for the DTC lead funnel); docs/simulator.md lists them all.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel, ConfigDict, Field, model_validator

# [6.3] GLP-1 persistence S(3m)=0.80, S(6m)=0.68, S(12m)=0.45, fitted by least squares to the sBG
# survival S(t) = B(a, b+t) / B(a, b): gives S = 0.81, 0.66, 0.46. Its concentration a+b (~43)
# is the only heterogeneity figure the sources offer, so every other area reuses it.
GLP1_SBG_ALPHA = 3.02
GLP1_SBG_BETA = 39.95
SBG_CONCENTRATION = GLP1_SBG_ALPHA + GLP1_SBG_BETA


class SimulationConfig(BaseModel):
    """What to simulate. Rates are probabilities; times are in the units their names say."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- size and period --------------------------------------------------------------------
    patients: int = Field(1000, ge=1, le=50_000_000, description="People who get a patient id")
    months: int = Field(12, ge=1, le=120, description="Length of the simulated period")
    seed: int = Field(7, ge=0, le=2**63 - 1, description="Same seed, same bytes")
    start: date = Field(date(2025, 1, 1), description="First day (00:00 UTC) of the period")

    # -- acquisition --------------------------------------------------------------------------
    bounced_visitors_per_patient: float = Field(
        1.0, ge=0, le=50, description="Anonymous visitors who never register (assumption)"
    )
    weekend_factor: float = Field(
        0.79,
        gt=0,
        le=2,
        description="Weekend-day activity relative to a weekday [6.2: 76% weekdays]",
    )
    daytime_share: float = Field(
        0.71, gt=0, lt=1, description="Patient activity between 08:00 and 18:00 local [6.2]"
    )
    yearly_amplitude: float = Field(
        0.15, ge=0, lt=1, description="Acquisition swing over the year (assumption)"
    )
    yearly_peak_day: int = Field(
        10, ge=1, le=366, description="Day of year acquisition peaks: New Year (assumption)"
    )
    annual_growth: float = Field(
        0.13, ge=-0.9, le=10, description="Acquisition trend per year [H6: +13% subscribers FY2025]"
    )
    extra_sessions_before_registration: float = Field(
        0.6, ge=0, le=20, description="Mean anonymous return visits before sign-up (assumption)"
    )

    # -- the funnel -------------------------------------------------------------------------
    questionnaire_rate: float = Field(
        0.70, ge=0, le=1, description="Registered -> questionnaire started (assumption [6.2])"
    )
    consultation_rate: float = Field(
        0.60, ge=0, le=1, description="Questionnaire -> consultation submitted (assumption [6.2])"
    )
    no_show_rate: float = Field(
        0.09, ge=0, le=1, description="Accepted consultation never completed [6.5]"
    )
    prescription_rate: float = Field(
        0.77, ge=0, le=1, description="Completed consultation -> prescription [6.2]"
    )
    first_fill_rate_chronic: float = Field(
        0.75, ge=0, le=1, description="Prescription -> first paid order, chronic [6.4]"
    )
    first_fill_rate_acute: float = Field(
        0.90, ge=0, le=1, description="Prescription -> first paid order, acute [6.4]"
    )
    subscription_rate: float = Field(
        0.80, ge=0, le=1, description="First order (chronic) -> subscription (assumption [6.1])"
    )

    # -- providers ----------------------------------------------------------------------------
    patients_per_provider: int = Field(
        1500, ge=1, description="Panel size; sets the provider count (assumption)"
    )
    provider_response_median_minutes: float = Field(
        24.0, gt=0, description="Median assignment -> acceptance [6.2]"
    )
    visit_median_minutes: float = Field(
        7.4, gt=0, description="Median acceptance -> decision (time in visit) [6.2]"
    )

    # -- subscriptions --------------------------------------------------------------------
    monthly_revenue_per_subscriber: float = Field(
        70.0, gt=0, description="Mean monthly plan price across the area mix [6.1 H2-H6: $54-$83]"
    )
    monthly_churn: float = Field(
        0.068, gt=0, lt=1, description="Mean per-period cancellation hazard [6.3 Recurly B2C]"
    )
    involuntary_churn_share: float = Field(
        0.206, ge=0, le=1, description="Share of churn from failed payments [6.3: 1.4 of 6.8 pts]"
    )
    recovered_payment_failure_rate: float = Field(
        0.05, ge=0, le=1, description="Renewals that fail once then succeed (assumption)"
    )
    renewal_notice_days: int = Field(
        3, ge=1, le=27, description="subscription.renewal_approaching lead time (assumption)"
    )
    refill_notice_days: int = Field(
        7, ge=1, le=27, description="refill.due lead time before supply runs out [§3.4 7/3/1]"
    )

    # -- one-off buyers (BG/NBD) ------------------------------------------------------------
    reorder_rate_per_month: float = Field(
        0.8, gt=0, le=10, description="Mean Poisson reorder rate while alive (assumption)"
    )
    refill_probability: float = Field(
        0.93, gt=0, lt=1, description="Mean P(stay alive after an order) [6.4: 0.92-0.95]"
    )

    # -- after purchase -----------------------------------------------------------------------
    sessions_per_customer_month: float = Field(
        2.0, ge=0, le=100, description="Logged-in visits while a customer (assumption)"
    )
    support_tickets_per_customer_month: float = Field(
        0.08, ge=0, le=10, description="Support tickets while a customer (assumption)"
    )
    review_rate_per_customer_month: float = Field(
        0.02, ge=0, le=1, description="Chance per month of a (single) review (assumption)"
    )
    referral_rate_per_customer_month: float = Field(
        0.015, ge=0, le=1, description="Referrals per customer month (assumption)"
    )
    profile_updates_per_customer_month: float = Field(
        0.03, ge=0, le=10, description="patient.updated per customer month (assumption)"
    )
    win_back_rate: float = Field(
        0.10, ge=0, le=1, description="Churned customers who come back (assumption)"
    )
    win_back_mean_days: float = Field(
        90.0, gt=0, description="Mean delay from churn to the win-back order (assumption)"
    )
    win_back_resubscribe_rate: float = Field(
        0.5, ge=0, le=1, description="Win-backs who start a new subscription (assumption)"
    )

    @model_validator(mode="after")
    def _period_fits(self) -> SimulationConfig:
        if self.start.year + (self.start.month - 1 + self.months) // 12 > 2099:
            raise ValueError("the period must end before 2100")
        return self

    @property
    def start_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The instant the period ends (exclusive): `start` plus `months` calendar months."""
        months = self.start.month - 1 + self.months
        year, month = self.start.year + months // 12, months % 12 + 1
        day = min(self.start.day, _days_in_month(year, month))
        return datetime(year, month, day, tzinfo=UTC)

    @property
    def days(self) -> int:
        """Whole days in the period."""
        return (self.end - self.start_at).days

    def sbg_params(self, area_is_glp1: bool) -> tuple[float, float]:
        """(alpha, beta) of the Beta the per-patient churn hazard is drawn from [6.3, §1.5]."""
        if area_is_glp1:
            return GLP1_SBG_ALPHA, GLP1_SBG_BETA
        alpha = self.monthly_churn * SBG_CONCENTRATION
        return alpha, SBG_CONCENTRATION - alpha


def _days_in_month(year: int, month: int) -> int:
    nxt = date(year + month // 12, month % 12 + 1, 1)
    return (nxt - date(year, month, 1)).days
