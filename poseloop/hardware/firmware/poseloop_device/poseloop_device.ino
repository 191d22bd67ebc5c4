// poseloop reference device for Arduino-class boards (Uno, Nano, Mega, ...).
// The protocol lives in poseloop_core.c; this file maps it onto the board.
// Wire protocol and flashing: see ../README.md.
#include "poseloop_core.h"

// Output channel n drives digital pin PINS[n]: channels 0..7 are pins 2..9.
static const uint8_t PINS[PL_CHANNELS] = {2, 3, 4, 5, 6, 7, 8, 9};

void pl_board_output(uint8_t channel, uint8_t high) {
  digitalWrite(PINS[channel], high ? HIGH : LOW);
}

uint32_t pl_board_millis(void) {
  return millis();
}

void pl_board_reply(const char *line) {
  size_t len = strlen(line);
  if ((size_t)Serial.availableForWrite() >= len) {  // a host that does not read never stalls us
    Serial.write(line, len);
  }
}

void setup() {
  for (uint8_t channel = 0; channel < PL_CHANNELS; channel++) {
    pinMode(PINS[channel], OUTPUT);
  }
  pl_init();  // all outputs off
  Serial.begin(115200);
}

void loop() {
  while (Serial.available() > 0) {
    pl_receive((char)Serial.read());
  }
  pl_poll();
}
