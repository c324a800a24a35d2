// The actor type both sides share: app.js hosts it, drive.js builds a proxy to it.
// ActorProxyBuilder takes the actor type from the class name, so both use this class.
"use strict";
const { AbstractActor, Temporal } = require("@dapr/dapr");

class CounterActor extends AbstractActor {
  async increment(by) {
    const state = this.getStateManager();
    const [has, current] = await state.tryGetState("count");
    const next = (has ? current : 0) + (by || 1);
    await state.setState("count", next);
    return next;
  }

  async count() {
    const [has, current] = await this.getStateManager().tryGetState("count");
    return has ? current : 0;
  }

  async startReminder() {
    await this.registerActorReminder("tick", Temporal.Duration.from({ milliseconds: 200 }),
      Temporal.Duration.from({ seconds: 1 }), undefined, "tock");
    return "registered";
  }

  async stopReminder() {
    await this.unregisterActorReminder("tick");
    return "unregistered";
  }

  async reminders() {
    const [has, fired] = await this.getStateManager().tryGetState("fired");
    return has ? fired : [];
  }

  async startTimer() {
    await this.registerActorTimer("beat", "onTimer", Temporal.Duration.from({ milliseconds: 200 }),
      Temporal.Duration.from({ milliseconds: 500 }), undefined, "tick-state");
    return "registered";
  }

  async stopTimer() {
    await this.unregisterActorTimer("beat");
    return "unregistered";
  }

  async ticks() {
    const [has, ticks] = await this.getStateManager().tryGetState("ticks");
    return has ? ticks : [];
  }

  // The timer's callback: a plain actor method the sidecar calls with the timer's state.
  async onTimer(data) {
    const state = this.getStateManager();
    const [has, ticks] = await state.tryGetState("ticks");
    await state.setState("ticks", [...(has ? ticks : []), data]);
  }

  async receiveReminder(data) {
    const state = this.getStateManager();
    const [has, fired] = await state.tryGetState("fired");
    await state.setState("fired", [...(has ? fired : []), data]);
    await state.saveState();
  }
}

module.exports = { CounterActor };
