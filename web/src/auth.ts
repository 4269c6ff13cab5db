/** The key form: shown when `/api/v1` answers 401, once per browser session. */

import { Unauthorized, rememberKey } from "./api";

function askForKey(message: string): Promise<void> {
  const dialog = document.querySelector<HTMLDialogElement>("#key-dialog")!;
  const form = document.querySelector<HTMLFormElement>("#key-form")!;
  const input = document.querySelector<HTMLInputElement>("#key-input")!;
  document.querySelector("#key-message")!.textContent = message;
  input.value = "";
  // Escape would close the dialog and leave the page waiting with nothing to show.
  dialog.addEventListener("cancel", (event) => event.preventDefault());
  dialog.showModal();
  return new Promise((resolve) => {
    form.addEventListener(
      "submit",
      () => {
        rememberKey(input.value);
        resolve();
      },
      { once: true },
    );
  });
}

/** `load()`, asking for the key and trying again for as long as the server refuses it. */
export async function withKey<T>(load: () => Promise<T>): Promise<T> {
  let message = "This server needs its API key.";
  for (;;) {
    try {
      return await load();
    } catch (error) {
      if (!(error instanceof Unauthorized)) throw error;
      await askForKey(message);
      message = "The server refused that key. Try again.";
    }
  }
}
