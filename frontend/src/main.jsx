import { render } from "preact";
import { App } from "./App.jsx";
import { connect } from "./connection.js";

render(<App />, document.getElementById("app"));
connect();
