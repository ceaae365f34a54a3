"""A seeded, reproducible synthetic market with labelled injected anomalies.

Why a simulator: the exchanges are not reachable from every machine, real labelled anomalies are few, and a demo
must show an alert within a minute or two. The simulator gives every part of the service (ingest, features, the
worker, the API, the benchmarks) a realistic stream whose ground truth is known exactly.

What is realistic about it:
- prices: GARCH(1,1)-like volatility clustering with Student-t (df 4) innovations, per asset, shared by every
  instrument quoting that asset (Binance and Bybit BTCUSDT move together up to a small basis; BTCUSDC differs
  from BTCUSDT only by the USDC peg);
- trades: Poisson taker orders whose rate follows an intraday (UTC) pattern and the current volatility; an order
  larger than the touch sweeps several levels and prints several trades in the same millisecond, as Binance does;
  log-normal sizes rounded to the lot size;
- books: the top levels around the mid with depth growing away from it.

Injected anomalies, each labelled (type, key, start_ms, end_ms, onset_ms):
- pump_and_dump: quiet accumulation (mild buy pressure and drift), then a rush of taker buys sweeping the book
  (bursts of trades in the same millisecond, volume x50-150, price +30..150 %), then the dump;
- flash_crash: a sell sweep of -5..-12 % within a minute, then a partial recovery;
- wash_trading: bursts of equal-size buy/sell pairs at one price with no price impact;
- spoofing_like: a large bid (or ask) wall a few ticks from the touch that appears and vanishes repeatedly and
  is never traded against, while the price drifts the other way;
- depeg: the quote currency USDC loses 3..10 % against USD; every USDC-quoted pair rises against its USDT twin.

Two ways to run it: `MarketSimulator` (offline, as fast as the CPU goes, for tests, training and benchmarks; fixed
tick rates with `SimConfig(fixed_rates=True)`) and `SimulatorSource` (a runtime Component in
service/ingest/components.py terms, paced against the wall clock for `rmad run --source simulator`).

Modules: `definitions` (labels, specs, config, events), `schedule` (when anomalies happen and what they do),
`generator` (the offline simulator), `files` (labels and events on disk, events as the bus carries them),
`source` (the runtime Component), `simulate_cli` (`rmad simulate`). The names below are the package's public face.
"""

from service.ingest.simulator.definitions import (
    ANOMALY_KINDS,
    DAY_MS,
    DEFAULT_ASSETS,
    DEFAULT_INSTRUMENTS,
    DEFAULT_START_MS,
    EXPECTED_ALERT_TYPE,
    AnomalySpec,
    AssetSpec,
    InstrumentSpec,
    LabelType,
    SimBar,
    SimBook,
    SimConfig,
    SimEvent,
    SimLabel,
    SimTrade,
)
from service.ingest.simulator.files import (
    GeneratedFiles,
    TradesCsvWriter,
    generate_files,
    market_events,
    read_labels,
    to_market,
    with_pump_at,
    write_labels,
    write_trades_csv,
)
from service.ingest.simulator.generator import MarketSimulator
from service.ingest.simulator.schedule import AnomalySchedule, intraday_factor, plan_anomaly
from service.ingest.simulator.source import LabelPublisher, SimulatorSource

__all__ = [
    "ANOMALY_KINDS",
    "DAY_MS",
    "DEFAULT_ASSETS",
    "DEFAULT_INSTRUMENTS",
    "DEFAULT_START_MS",
    "EXPECTED_ALERT_TYPE",
    "AnomalySchedule",
    "AnomalySpec",
    "AssetSpec",
    "GeneratedFiles",
    "InstrumentSpec",
    "LabelPublisher",
    "LabelType",
    "MarketSimulator",
    "SimBar",
    "SimBook",
    "SimConfig",
    "SimEvent",
    "SimLabel",
    "SimTrade",
    "SimulatorSource",
    "TradesCsvWriter",
    "generate_files",
    "intraday_factor",
    "market_events",
    "plan_anomaly",
    "read_labels",
    "to_market",
    "with_pump_at",
    "write_labels",
    "write_trades_csv",
]
